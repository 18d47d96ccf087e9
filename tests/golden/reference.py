"""What every golden script asks HF for: the output of each decoder layer (a forward hook on
model.layers[i], which is what alens calls blocks.{i}.hook_resid_post) and the model's result."""
import torch


def run_keeping_layers(model, layers, token_ids, **forward_kwargs):
    """Runs `model` on one sequence; returns ({i: [T, d] output of layers[i]}, the model's result)."""
    kept = {}

    def keep(i):
        def hook(_module, _inputs, output):
            kept[i] = (output[0] if isinstance(output, tuple) else output)[0].detach().clone()
        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        with torch.no_grad():
            result = model(torch.tensor([token_ids]), **forward_kwargs)
    finally:
        for h in handles:
            h.remove()
    return kept, result
