"""examples/seq2seq.py: an encoder-decoder of two crnn models joined by the
encoder's backward.  Its gradient is checked against finite differences of
the decoder's loss (float64), and a small run learns to reverse strings."""
import importlib.util
from pathlib import Path

import numpy as np

import crnn
from reference import central_differences

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "seq2seq.py"


def load_example():
    spec = importlib.util.spec_from_file_location("seq2seq_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_encoder_gradients_through_the_decoders_state_gradient():
    seq2seq = load_example()
    encoder = crnn.LSTM(seq2seq.DIGITS, 5, output=None, return_sequences=False,
                        dtype="float64", seed=0)
    decoder = crnn.LSTM(seq2seq.DIGITS + 1, 5, seq2seq.DIGITS, dtype="float64", seed=1)
    digits = np.random.default_rng(0).integers(0, seq2seq.DIGITS, size=(4, 3))
    _, encoder_grads, decoder_grads = seq2seq.gradients(encoder, decoder, digits)

    def loss():
        return seq2seq.gradients(encoder, decoder, digits)[0]

    rng = np.random.default_rng(1)
    for model, grads in ((encoder, encoder_grads), (decoder, decoder_grads)):
        for name, array in model.params.items():     # 10 entries of each
            flat = rng.choice(array.size, size=min(10, array.size), replace=False)
            indices = [np.unravel_index(i, array.shape) for i in flat]
            np.testing.assert_allclose([grads[name][i] for i in indices],
                                       central_differences(loss, array, indices),
                                       rtol=1e-6, atol=1e-9, err_msg=name)
    assert np.abs(encoder_grads["W0"]).max() > 1e-4     # the encoder does learn


def test_a_small_encoder_decoder_learns_to_reverse():
    seq2seq = load_example()
    accuracy, _ = seq2seq.train(length=4, hidden=48, batch_size=32, steps=400,
                                verbose=False, test_size=500)
    assert accuracy >= 0.95
