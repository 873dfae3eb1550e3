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

from recipes.speech import intervals

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
    labels = tf.cast(labels, tf.int32)
    blank_lp, emit_lp = lattice(tf.cast(logits, tf.float32), labels, blank)  # [B, T, U+1], [B, T, U]
    batch = tf.shape(blank_lp)[0]
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


def lattice(logits, labels, blank=0):
    """(blank log-probabilities [B, T, U+1], label log-probabilities [B, T, U]) of a joint's logits.

    The loss needs only these two of the V log-probabilities at each (t, u).
    Autodiff of log_softmax and a gather would write and read the whole
    [B, T, U+1, V] tensor several times (0.07 s of a 0.23 s demo step); the
    gradient written out, d/dlogits = onehot * g - softmax * sum(g), costs
    one pass (2.5x faster, and equal to autodiff's to float rounding: tests/test_rnnt.py).
    """
    shape = tf.shape(logits)
    every_frame = tf.broadcast_to(labels[:, None, :], [shape[0], shape[1], shape[2] - 1])

    @tf.custom_gradient
    def log_probs_of(logits):
        norm = tf.reduce_logsumexp(logits, axis=-1)  # [B, T, U+1]
        emit = tf.gather(logits[:, :, :-1, :], every_frame, axis=3, batch_dims=3) - norm[:, :, :-1]
        blank_lp = logits[..., blank] - norm

        def gradient(blank_grad, emit_grad):
            emit_grad = tf.pad(emit_grad, [[0, 0], [0, 0], [0, 1]])  # the last u emits nothing
            targets = tf.one_hot(tf.pad(every_frame, [[0, 0], [0, 0], [0, 1]]), shape[3], dtype=logits.dtype)
            blanks = tf.one_hot(blank, shape[3], dtype=logits.dtype)
            softmax = tf.exp(logits - norm[..., None])
            return (targets * emit_grad[..., None] + blanks * blank_grad[..., None]
                    - softmax * (blank_grad + emit_grad)[..., None])

        return (blank_lp, emit), gradient

    return log_probs_of(logits)


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

    `joint(t, histories)` returns the [len(histories), V] log-probabilities
    at frame t after each label history (a tuple), so a recognizer can
    compute all the hypotheses of a round in one batched call.
    """
    hyps = {(): 0.0}
    for t in range(frames):
        finished = {}
        active = dict(hyps)
        for _ in range(max_symbols + 1):
            expanded = {}
            histories = list(active)
            for history, log_probs in zip(histories, joint(t, histories)):
                score = active[history]
                _merge(finished, history, score + float(log_probs[blank]))
                for k in np.argsort(log_probs)[::-1][:beam]:
                    if k != blank:
                        _merge(expanded, history + (int(k),), score + float(log_probs[k]))
            active = dict(sorted(expanded.items(), key=lambda kv: -kv[1])[:beam])
            if not active:
                break
        hyps = dict(sorted(finished.items(), key=lambda kv: -kv[1])[:beam])
    return list(max(hyps.items(), key=lambda kv: kv[1])[0])


def one_at_a_time(joint):
    """A batched joint (as beam_search takes) from `joint(t, history)` for one history."""
    return lambda t, histories: [joint(t, history) for history in histories]


def _merge(pool, history, score):
    pool[history] = score if history not in pool else float(np.logaddexp(pool[history], score))


def word_error_rate(references, hypotheses):
    """Total word edit distance over total reference words, on normalized text."""
    return intervals.metric(utterance_errors(references, hypotheses))


def utterance_errors(references, hypotheses):
    """[utterances, 2] float array: each utterance's word edit distance and reference words.

    Example:

    >>> scores = utterance_errors(["the cat sat", "a dog"], ["the cat", "a dog"])
    >>> scores.tolist(), intervals.metric(scores)
    ([[1.0, 3.0], [0.0, 2.0]], 0.2)
    """
    pairs = [(normalize(ref).split(), normalize(hyp).split()) for ref, hyp in zip(references, hypotheses, strict=True)]
    return np.array([(edit_distance(r, h), len(r)) for r, h in pairs], np.float64).reshape(-1, 2)


def normalize(text):
    return " ".join("".join(c if c.isalnum() or c == "'" else " " for c in text.lower()).split())


def edit_distance(a, b):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


__all__ = ["rnnt_loss", "lattice", "greedy_decode", "beam_search", "one_at_a_time", "word_error_rate",
           "utterance_errors", "normalize", "edit_distance"]
