//! viz: draws arrays (heatmaps, curves) with plotters; knows nothing of models.
