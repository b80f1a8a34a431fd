"""An encoder-decoder in numpy and crnn alone: reverse strings of digits.

Two crnn models make one network:

- the encoder, ``crnn.LSTM(..., output=None, return_sequences=False)``,
  reads the digits and hands over its final state (h, c);
- the decoder, ``crnn.LSTM(..., output="softmax")``, starts from that state
  and writes the digits in reverse order, reading the previous digit at each
  step (a start token first; teacher forcing in training, its own guesses
  when tested).

One training step: the decoder's ``loss_and_grad(..., return_state_grad=True)``
gives its gradients and ∂L/∂(initial state), which is ∂L/∂(the encoder's
final state); the encoder's ``backward(cache, d_state=...)`` carries it back
through the encoder.  crnn's Adam updates both.  Printed: the exact-sequence
accuracy (every digit right) on unseen strings, decoded greedily.

    python examples/seq2seq.py                    # length 8, under a minute (one thread)
    python examples/seq2seq.py --length 5 --steps 600
"""
import argparse
import time

import numpy as np

import crnn

DIGITS = 10
START = DIGITS          # the decoder's first input


def make_models(hidden, seed):
    encoder = crnn.LSTM(DIGITS, hidden, output=None, return_sequences=False,
                        seed=seed)
    decoder = crnn.LSTM(DIGITS + 1, hidden, DIGITS, output="softmax", seed=seed + 1)
    return encoder, decoder


def gradients(encoder, decoder, digits):
    """The decoder's loss on reversing `digits` (N, length) and the
    gradients of both models: (loss, encoder's, decoder's)."""
    targets = digits[:, ::-1]
    # teacher forcing: the decoder reads the start token, then the true digits
    decoder_inputs = np.concatenate(
        [np.full((len(digits), 1), START), targets[:, :-1]], axis=1)
    _, state, cache = encoder.forward(digits, return_state=True, return_cache=True)
    loss, decoder_grads, d_state = decoder.loss_and_grad(
        decoder_inputs, targets, initial_state=state, return_state_grad=True)
    # ∂L/∂(decoder's initial state) is ∂L/∂(encoder's final state)
    encoder_grads = encoder.backward(cache, d_state=d_state)
    return loss, encoder_grads, decoder_grads


def train_step(encoder, decoder, optimizers, digits):
    """One step of Adam on both models; returns the decoder's loss."""
    loss, encoder_grads, decoder_grads = gradients(encoder, decoder, digits)
    for model, grads, optimizer in zip((encoder, decoder),
                                       (encoder_grads, decoder_grads), optimizers):
        params = model.params
        optimizer.step(params, {name: grads[name] for name in params})
    return loss


def reverse(encoder, decoder, digits):
    """Greedy decoding: each step's most likely digit is the next input."""
    _, state = encoder.forward(digits, return_state=True)
    stream = decoder.stream(batch_size=len(digits))
    stream.state = state
    token = np.full(len(digits), START)
    written = []
    for _ in range(digits.shape[1]):
        token = stream.step(token).argmax(axis=1)
        written.append(token)
    return np.stack(written, axis=1)


def train(length=8, hidden=128, batch_size=64, steps=3000, lr=5e-3, seed=0,
          test_size=1000, verbose=True):
    """Train on random digit strings; returns (exact-sequence accuracy on
    `test_size` new strings, seconds spent training)."""
    rng = np.random.default_rng(seed)
    encoder, decoder = make_models(hidden, seed)
    optimizers = (crnn.optim.Adam(lr=lr), crnn.optim.Adam(lr=lr))
    start = time.perf_counter()
    for step in range(1, steps + 1):
        loss = train_step(encoder, decoder, optimizers,
                          rng.integers(0, DIGITS, size=(batch_size, length)))
        if verbose and step % 250 == 0:
            print(f"step {step:5d}  loss {loss:.4f}  "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
    seconds = time.perf_counter() - start
    test = rng.integers(0, DIGITS, size=(test_size, length))
    accuracy = float(np.mean(np.all(reverse(encoder, decoder, test) == test[:, ::-1],
                                    axis=1)))
    return accuracy, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    accuracy, seconds = train(args.length, args.hidden, args.batch_size, args.steps,
                              seed=args.seed)
    print(f"reversing {args.length} digits: {accuracy:.1%} of new strings exactly "
          f"right after {seconds:.1f} s of training")


if __name__ == "__main__":
    main()
