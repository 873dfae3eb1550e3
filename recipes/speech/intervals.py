"""95 % intervals of a metric: a bootstrap over test speakers.

Scores are per utterance: [n] values whose mean is the metric (accuracy:
1.0 for a right answer), or [n, 2] rows of (numerator, denominator) whose
sums' ratio is the metric (WER: word errors and reference words), so that
long utterances weigh what they weigh in the metric itself.

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
>>> errors = np.stack([np.arange(200) % 2, np.full(200, 4)], 1)  # 1 error in 8 words, every 2 utterances
>>> metric(errors), bootstrap(errors, groups)
(0.125, (0.125, 0.125))
"""
import numpy as np

RESAMPLES = 2000


def metric(scores):
    """The metric of per-utterance `scores`: their mean, or for [n, 2] rows the ratio of the column sums."""
    values, weights = _columns(scores)
    # No reference words at all (WER): the insertions themselves count, as WER tools do.
    return float(values.sum() / max(weights.sum(), 1.0))


def bootstrap(scores, groups, seed=0, resamples=RESAMPLES):
    """(low, high): the 2.5th and 97.5th percentiles of the metric of `scores` over speaker resamples."""
    return _interval(*_columns(scores), groups, seed, resamples)


def paired(scores_a, scores_b, groups, seed=0, resamples=RESAMPLES):
    """(low, high) of metric(a) - metric(b), both resampled with the same speakers."""
    (a, weights), (b, weights_b) = _columns(scores_a), _columns(scores_b)
    if a.shape != b.shape or not np.array_equal(weights, weights_b):
        raise ValueError(f"paired scores must be of the same utterances. Received: shapes "
                         f"{np.shape(scores_a)} and {np.shape(scores_b)}")
    return _interval(a - b, weights, groups, seed, resamples)


def _columns(scores):
    """(numerators, denominators) of [n] or [n, 2] scores."""
    scores = np.asarray(scores, float)
    if scores.ndim == 2 and scores.shape[1] == 2:
        return scores[:, 0], scores[:, 1]
    if scores.ndim != 1:
        raise ValueError(f"scores must be [n] or [n, 2]. Received: shape {scores.shape}")
    return scores, np.ones_like(scores)


def _interval(values, weights, groups, seed, resamples):
    groups = np.asarray(groups)
    if values.shape != groups.shape or values.size == 0:
        raise ValueError(f"need one group per score. Received: {values.shape} scores, {groups.shape} groups")
    _, index = np.unique(groups, return_inverse=True)
    sums = np.bincount(index, weights=values)
    counts = np.bincount(index, weights=weights)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, sums.size, size=(resamples, sums.size))
    means = sums[draws].sum(1) / counts[draws].sum(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)
