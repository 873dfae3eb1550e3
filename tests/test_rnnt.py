"""RNN-T loss against a brute-force sum over alignments; decoders; WER."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from recipes.librispeech.rnnt import beam_search, greedy_decode, one_at_a_time, rnnt_loss, word_error_rate


def brute_force_loss(logits, labels, frames, length):
    """-log of the sum, over every alignment, of the product of its probabilities."""
    log_probs = tf.nn.log_softmax(logits, axis=-1)
    paths = []
    steps = frames + length
    for label_slots in itertools.combinations(range(steps - 1), length):  # the last step is a blank
        t = u = 0
        terms = []
        for step in range(steps):
            if step in label_slots:
                terms.append(log_probs[t, u, labels[u]])
                u += 1
            else:
                terms.append(log_probs[t, u, 0])
                t += 1
        paths.append(tf.add_n(terms))
    return -tf.reduce_logsumexp(tf.stack(paths))


@pytest.mark.parametrize("frames,length,vocab", [(1, 1, 3), (3, 2, 4), (4, 3, 5), (5, 0, 3)])
def test_loss_and_gradients_match_brute_force(frames, length, vocab):
    rng = np.random.default_rng(frames * 10 + length)
    logits = tf.Variable(rng.normal(size=(1, frames, length + 1, vocab)).astype(np.float32))
    labels = rng.integers(1, vocab, size=(1, max(length, 1)))
    with tf.GradientTape(persistent=True) as tape:
        ours = rnnt_loss(logits, labels, [frames], [length])[0]
        reference = brute_force_loss(logits[0], labels[0], frames, length)
    np.testing.assert_allclose(ours.numpy(), reference.numpy(), rtol=1e-5)
    np.testing.assert_allclose(tape.gradient(ours, logits).numpy(), tape.gradient(reference, logits).numpy(),
                               atol=1e-5)


def test_batch_with_padding_matches_each_example_alone():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(2, 5, 4, 6)).astype(np.float32)
    labels = np.array([[1, 2, 3], [4, 5, 0]])
    batch = rnnt_loss(logits, labels, [5, 3], [3, 2]).numpy()
    alone = [rnnt_loss(logits[:1], labels[:1], [5], [3]).numpy()[0],
             rnnt_loss(logits[1:, :3, :3], labels[1:, :2], [3], [2]).numpy()[0]]
    np.testing.assert_allclose(batch, alone, rtol=1e-5)


def all_sequences(joint, frames, max_symbols):
    """log P(labels) for every label sequence, by enumerating every alignment."""
    scores = {}

    def walk(t, history, score, emitted):
        if t == frames:
            scores[history] = np.logaddexp(scores.get(history, -np.inf), score)
            return
        log_probs = joint(t, history)
        walk(t + 1, history, score + log_probs[0], 0)
        if emitted < max_symbols:
            for k in range(1, len(log_probs)):
                walk(t, history + (k,), score + log_probs[k], emitted + 1)
    walk(0, (), 0.0, 0)
    return scores


def trap_joint():
    """A joint where the greedy first step leads to a worse sequence."""
    def joint(t, history):
        if t == 0 and history == ():
            p = [0.0, 0.4, 0.35, 0.25]  # greedy emits 1...
        elif history[:1] == (1,):
            p = [0.34, 0.33, 0.33, 0.0]  # ...after which everything is uncertain
        elif history[:1] == (2,):
            p = [0.95, 0.0, 0.0, 0.05]  # 2 then blank is a confident path
        else:
            p = [0.9, 0.05, 0.05, 0.0]
        return np.log(np.maximum(np.array(p), 1e-12))
    return joint


def test_beam_search_finds_the_best_sequence_where_greedy_does_not():
    joint, frames = trap_joint(), 2
    scores = all_sequences(joint, frames, max_symbols=2)
    best = max(scores, key=scores.get)
    assert list(best) == beam_search(one_at_a_time(joint), frames, beam=16, max_symbols=2)
    assert greedy_decode(joint, frames, max_symbols=2) != list(best)


def test_beam_search_on_random_joints_matches_enumeration():
    rng = np.random.default_rng(0)
    for _ in range(5):
        table = {}

        def joint(t, history):
            key = (t, history)
            if key not in table:
                table[key] = np.log(rng.dirichlet(np.ones(3) * 0.5))
            return table[key]
        scores = all_sequences(joint, 3, max_symbols=1)
        best = max(scores, key=scores.get)
        assert beam_search(one_at_a_time(joint), 3, beam=50, max_symbols=1) == list(best)


def test_word_error_rate_on_normalized_words():
    assert word_error_rate(["Hello, world!"], ["hello world"]) == 0.0
    assert word_error_rate(["the cat sat", "a b"], ["the bat sat down", "a b"]) == pytest.approx(2 / 5)
