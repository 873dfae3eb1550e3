"""95 % intervals of a metric: a bootstrap over test speakers.

Utterances of one speaker are not independent (a model that fails a voice
fails most of its utterances), so the bootstrap resamples speakers, with
all their utterances, not single utterances: with a handful of test
speakers the interval is as wide as the evidence really is. The paired
form resamples the same speakers for both models, which is what a
statement such as "Diff within 2 points of BL" needs.

Example:

>>> import numpy as np
>>> groups = np.repeat(np.arange(10), 20)
>>> right = (np.arange(200) % 5 != 0).astype(float)   # 80 % everywhere
>>> low, high = bootstrap(right, groups)
>>> round(low, 2), round(high, 2)
(0.8, 0.8)
>>> paired(right, right, groups)
(0.0, 0.0)
"""
import numpy as np

RESAMPLES = 2000


def bootstrap(scores, groups, seed=0, resamples=RESAMPLES):
    """(low, high): the 2.5th and 97.5th percentiles of the mean of `scores` over speaker resamples."""
    return _interval(np.asarray(scores, float), groups, seed, resamples)


def paired(scores_a, scores_b, groups, seed=0, resamples=RESAMPLES):
    """(low, high) of mean(a) - mean(b), both resampled with the same speakers."""
    a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must be of the same utterances. Received: shapes {a.shape} and {b.shape}")
    return _interval(a - b, groups, seed, resamples)


def _interval(values, groups, seed, resamples):
    groups = np.asarray(groups)
    if values.shape != groups.shape or values.size == 0:
        raise ValueError(f"need one group per score. Received: {values.shape} scores, {groups.shape} groups")
    _, index = np.unique(groups, return_inverse=True)
    sums = np.bincount(index, weights=values)
    counts = np.bincount(index).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, sums.size, size=(resamples, sums.size))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)
