"""The RNN-T loss in TensorFlow, greedy and beam-search decoding, and WER.

TensorFlow has no RNN-T loss op, so it is written here with log-space
forward variables (Graves 2012). With log-probabilities y[t, u, k] of the
joint network for input frame t and label prefix u (blank = 0):

    alpha[0, 0] = 0
    alpha[t, u] = logaddexp(alpha[t-1, u] + y[t-1, u, blank],
                            alpha[t, u-1] + y[t, u-1, labels[u-1]])
    loss        = -(alpha[T-1, U] + y[T-1, U, blank])

Within a row t the recurrence in u is linear in the log semiring, so a row
is solved at once: with S[u] = sum_{j<u} y[t, j, labels[j]],
alpha[t, u] = S[u] + cumulative_logsumexp(from_above - S)[u]. Rows are
scanned over t; gradients come from autodiff. Positions past an example's
label length hold unused values, as alpha only flows toward larger u.
"""
import numpy as np

from tfdiff import keras  # noqa: F401  (selects tf_keras before TensorFlow loads)
import tensorflow as tf


def rnnt_loss(logits, labels, logit_lengths, label_lengths, blank=0):
    """Per-example negative log-likelihood of `labels` under an RNN-T joint.

    Args:
        logits: [B, T, U+1, V] joint network outputs (unnormalized).
        labels: [B, U] int label ids, padded past `label_lengths` with any id.
        logit_lengths: [B] valid frames per example (>= 1).
        label_lengths: [B] valid labels per example.
        blank: the blank id.

    Example:

    >>> import numpy as np
    >>> loss = rnnt_loss(np.zeros((1, 2, 2, 3), np.float32), np.array([[1]]), [2], [1])
    >>> round(float(loss[0]), 4)  # 2 alignments, each of probability (1/3)**3
    2.6027
    """
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    batch = tf.shape(log_probs)[0]
    blank_lp = log_probs[..., blank]  # [B, T, U+1]
    labels = tf.cast(labels, tf.int32)
    shape = tf.shape(log_probs)
    every_frame = tf.broadcast_to(labels[:, None, :], [shape[0], shape[1], shape[2] - 1])
    emit_lp = tf.gather(log_probs[:, :, :-1, :], every_frame, axis=3, batch_dims=3)  # [B, T, U]
    prefix = tf.concat([tf.zeros_like(blank_lp[:, :, :1]), tf.cumsum(emit_lp, axis=2)], axis=2)

    def solve(from_above, t):
        return prefix[:, t] + tf.math.cumulative_logsumexp(from_above - prefix[:, t], axis=1)

    start = tf.concat([tf.zeros([batch, 1]), tf.fill([batch, tf.shape(blank_lp)[2] - 1], -np.inf)], axis=1)
    first = solve(start, 0)
    rest = tf.scan(lambda alpha, t: solve(alpha + blank_lp[:, t - 1], t),
                   tf.range(1, tf.shape(blank_lp)[1]), initializer=first)
    alphas = tf.transpose(tf.concat([first[None], rest], axis=0), [1, 0, 2])  # [B, T, U+1]
    index = tf.stack([tf.range(batch), tf.cast(logit_lengths, tf.int32) - 1,
                      tf.cast(label_lengths, tf.int32)], axis=1)
    return -(tf.gather_nd(alphas, index) + tf.gather_nd(blank_lp, index))


def greedy_decode(joint, frames, max_symbols=5, blank=0):
    """Labels from greedy RNN-T decoding.

    `joint(t, history)` returns the log-probabilities over the vocabulary at
    frame t given the labels emitted so far (a tuple); at most `max_symbols`
    labels are emitted per frame.
    """
    history = ()
    for t in range(frames):
        for _ in range(max_symbols):
            best = int(np.argmax(joint(t, history)))
            if best == blank:
                break
            history += (best,)
    return list(history)


def beam_search(joint, frames, beam=16, max_symbols=5, blank=0):
    """Labels of the most probable hypothesis under RNN-T beam search.

    A breadth-first beam over frames (as in ESPnet and icefall's
    "modified beam search" generalized to several symbols per frame):
    hypotheses reaching a frame by different alignments are merged by
    summing their probabilities.
    """
    hyps = {(): 0.0}
    for t in range(frames):
        finished = {}
        active = dict(hyps)
        for _ in range(max_symbols + 1):
            expanded = {}
            for history, score in active.items():
                log_probs = joint(t, history)
                _merge(finished, history, score + float(log_probs[blank]))
                for k in np.argsort(log_probs)[::-1][:beam]:
                    if k != blank:
                        _merge(expanded, history + (int(k),), score + float(log_probs[k]))
            active = dict(sorted(expanded.items(), key=lambda kv: -kv[1])[:beam])
            if not active:
                break
        hyps = dict(sorted(finished.items(), key=lambda kv: -kv[1])[:beam])
    return list(max(hyps.items(), key=lambda kv: kv[1])[0])


def _merge(pool, history, score):
    pool[history] = score if history not in pool else float(np.logaddexp(pool[history], score))


def word_error_rate(references, hypotheses):
    """Total word edit distance over total reference words, on normalized text."""
    errors = words = 0
    for ref, hyp in zip(references, hypotheses, strict=True):
        r, h = normalize(ref).split(), normalize(hyp).split()
        errors += edit_distance(r, h)
        words += len(r)
    return errors / max(words, 1)


def normalize(text):
    return " ".join("".join(c if c.isalnum() or c == "'" else " " for c in text.lower()).split())


def edit_distance(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


__all__ = ["rnnt_loss", "greedy_decode", "beam_search", "word_error_rate", "normalize", "edit_distance"]
