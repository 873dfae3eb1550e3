"""Post-hoc diffs: a model tuned with no budget, its delta from the base cut to the budget afterwards.

The baselines that answer "why learn the diff at all?": fine-tune F_t on
the new data with every weight free (FT), then cut FT - F_t down to the
byte budget a learned diff gets, with one of three rules:

- "topk": the largest |delta| of the whole model, as many as the bytes hold;
- "dare": a uniformly random share p of the deltas, each kept one divided
  by p, so the kept deltas sum, in expectation, to the full delta
  (DARE: Yu et al., "Language Models are Super Mario", ICML 2024);
- "bitdelta": the largest |delta| as "topk" keeps them, each replaced by
  its sign times one scale per weight, the mean |delta| kept there, the
  scale that best fits signs in the least-squares sense (BitDelta: Liu et
  al., "Your Fine-Tune May Only Be Worth One Bit", NeurIPS 2024). A weight's
  values are then two numbers, which the file's LZMA2 coding stores far
  more compactly than float16 deltas, so more deltas fit the bytes than
  "topk" keeps (over twice as many, tests/test_core.py).

Each is a sparse diff (float16 values), which any device applies. The
count kept is the largest whose file, signed, fits 4N / compression bytes,
N being every weight of the model.
"""
import numpy as np

from device import format as wire

from .allocation import fitting_count, global_masks
from .budget import budget_bytes
from .diff import Diff
from .model import named_weights, seal

RULES = ("topk", "dare", "bitdelta")


def posthoc_diff(base_model, tuned_model, compression, generation, rule="topk", seed=0):
    """The diff from `base_model` to `tuned_model`, cut after the fact to the byte budget.

    Args:
        base_model: F_t, the model the device holds.
        tuned_model: F_t fine-tuned with no budget: the same architecture.
        compression: the byte budget, 4N / compression bytes signed.
        generation: the generation the diff produces.
        rule: "topk", "dare" or "bitdelta" (the module docstring).
        seed: the random draw of "dare".

    Returns:
        a sealed `tfdiff.Diff` of sparse entries (float16 values).

    Example:

    >>> import tfdiff
    >>> from tfdiff import keras
    >>> base = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="out")])
    >>> tuned = keras.models.clone_model(base)
    >>> tuned.set_weights([w + 0.01 for w in base.get_weights()])
    >>> diff = tfdiff.posthoc_diff(base, tuned, compression=10.0, generation=1)
    >>> diff.nbytes + 68 <= tfdiff.budget_bytes(64 * 32 + 32, 10.0)
    True
    """
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {RULES}. Received: rule={rule!r}")
    if not isinstance(compression, (int, float)) or isinstance(compression, bool) or not compression >= 1:
        raise ValueError(f"`compression` must be a number >= 1. Received: compression={compression!r}")
    before, after = named_weights(base_model), named_weights(tuned_model)
    if {n: v.shape for n, v in before.items()} != {n: v.shape for n, v in after.items()}:
        raise ValueError("`tuned_model` must have the weights of `base_model` (names and shapes). Received: "
                         f"{sorted(set(after) ^ set(before))[:3] or 'other shapes'}")
    names = list(before)
    deltas = [(after[n].astype(np.float32) - before[n].astype(np.float32)).reshape(-1) for n in names]
    total = sum(d.size for d in deltas)
    limit = budget_bytes(total, compression)
    order = np.random.default_rng(seed).permutation(total) if rule == "dare" else None

    def diff_of(count):
        if rule in ("topk", "bitdelta"):
            kept = global_masks(deltas, count)
            scale = 1.0
        else:  # a uniformly random `count` of the positions of the whole model
            chosen = np.zeros(total, np.float32)
            chosen[order[:count]] = 1.0
            bounds = np.cumsum([0] + [d.size for d in deltas])
            kept = [chosen[a:b] for a, b in zip(bounds, bounds[1:])]
            scale = total / max(count, 1)
        entries = []
        for name, delta, mask in zip(names, deltas, kept):
            if rule == "bitdelta":  # sign times the weight's mean kept |delta|
                magnitude = np.abs(delta[mask > 0]).mean() if mask.any() else 0.0
                delta = np.sign(delta) * np.float32(magnitude)
            values = (delta * scale).astype(np.float16)
            indices = np.flatnonzero(mask * values)
            entries.append(wire.Entry(name, tuple(before[name].shape), "sparse", values[indices], indices))
        return Diff(method="sparse", entries=entries, base_digest=b"", target_digest=b"", generation=generation)

    def fits(count):
        return diff_of(count).nbytes + wire.SIGNATURE_BYTES <= limit

    # A float16 value and its gap take 3 bytes raw; even coded, well over one: `limit` values never fit.
    count = fitting_count(min(total, limit), fits)
    return seal(diff_of(count), before)
