"""RepE's LAT step in scikit-learn, for `cargo bench --bench lat`: per layer, the pair
differences (correct - copy) of 80% of the pairs, each randomly flipped, then
PCA(n_components=1).fit, as repe's rep_readers do; plus projecting every record on the
component for the sign and the held-out accuracy.

    python benches/sklearn_lat.py PAIRS LAYERS D RUNS

Prints the median seconds over RUNS (activations already in memory, like the Rust side).
"""
import statistics
import sys
import time

import numpy as np
from sklearn.decomposition import PCA

pairs, layers, d, runs = map(int, sys.argv[1:5])
rng = np.random.default_rng(3)
acts = []
for _ in range(layers):
    truth = rng.standard_normal(d).astype(np.float32)
    a = rng.standard_normal((2 * pairs, d)).astype(np.float32)
    a[1::2] += 0.3 * truth
    acts.append(a)
train = int(round(pairs * 0.8))


def extract():
    for a in acts:
        diffs = (a[1::2] - a[0::2])[:train].astype(np.float64)
        flips = rng.random(train) < 0.5
        diffs[flips] *= -1
        direction = PCA(n_components=1).fit(diffs).components_[0]
        projections = a.astype(np.float64) @ direction
        gap = (projections[1::2] - projections[0::2])
        if gap[:train].sum() < 0:
            gap = -gap
        _accuracy = (gap[train:] > 0).mean()


times = []
for _ in range(runs):
    t = time.perf_counter()
    extract()
    times.append(time.perf_counter() - t)
print(statistics.median(times))
