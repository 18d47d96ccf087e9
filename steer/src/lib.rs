//! steer: control vectors and steered generation on top of probe's hooked model.
