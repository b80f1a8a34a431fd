"""The ``crnn`` command: the main job on a built-in default.

``crnn`` (or ``python -m crnn``) trains a character-level vanilla RNN, the
source document's model, on a text every Python has without a download (the
Zen of Python, from the standard library's ``this`` module), and prints the
loss falling epoch after epoch, then a sample of greedy predictions.

The training loop here is a minimal Adam over ``model.loss_and_grad``; the
full trainer (crnn.Trainer) is a later addition.
"""
import argparse
import codecs
import sys
import time

import numpy as np

from . import RNN, __version__


def builtin_text():
    """The Zen of Python, decoded from the standard library's ``this``."""
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13")


def character_batches(text, vocabulary, steps):
    """Non-overlapping windows of `steps` characters: inputs and next chars."""
    index = {ch: i for i, ch in enumerate(vocabulary)}
    ids = np.array([index[ch] for ch in text], dtype=np.int64)
    count = (len(ids) - 1) // steps
    X = ids[:count * steps].reshape(count, steps)
    y = ids[1:count * steps + 1].reshape(count, steps)
    return X, y


def adam_step(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    state["t"] += 1
    t = state["t"]
    for name, g in grads.items():
        m = state.setdefault(("m", name), np.zeros_like(g))
        v = state.setdefault(("v", name), np.zeros_like(g))
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        step = lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
        params[name] -= step.astype(params[name].dtype)


def demo(epochs, hidden_size, steps, batch_size, lr, seed, out=sys.stdout):
    text = builtin_text()
    vocabulary = sorted(set(text))
    X, y = character_batches(text, vocabulary, steps)
    V = len(vocabulary)
    model = RNN(V, hidden_size, V, seed=seed)
    params = model.params
    rng = np.random.default_rng(seed)
    state = {"t": 0}
    print(f"crnn {__version__}: a character-level RNN (hidden {hidden_size}) on "
          f"the Zen of Python ({len(text)} characters, {V} symbols, "
          f"{len(X)} sequences of {steps})", file=out)
    print(f"{'epoch':>5}  {'loss':>7}  {'bits/char':>9}  {'accuracy':>8}  {'time':>6}",
          file=out)
    history = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        order = rng.permutation(len(X))
        total = 0.0
        for first in range(0, len(X), batch_size):
            rows = order[first:first + batch_size]
            loss, grads = model.loss_and_grad(X[rows], y[rows])
            adam_step(params, grads, state, lr)
            total += loss * len(rows)
        loss = total / len(X)
        accuracy = float((model.predict(X) == y).mean())
        history.append(loss)
        print(f"{epoch:>5}  {loss:>7.4f}  {loss / np.log(2):>9.3f}  "
              f"{accuracy:>8.3f}  {time.perf_counter() - start:>5.2f}s", file=out)
    sample = generate(model, vocabulary, prime="Beautiful", length=200,
                      rng=np.random.default_rng(seed), temperature=0.5)
    print("a sample (temperature 0.5), primed with 'Beautiful':", file=out)
    print("  " + sample.replace("\n", "\n  "), file=out)
    return history


def generate(model, vocabulary, prime, length, rng, temperature):
    """Feed `prime`, then sample `length` characters one step at a time,
    carrying the hidden state between calls of ``forward``."""
    index = {ch: i for i, ch in enumerate(vocabulary)}
    state = None
    probabilities, state = model.forward([np.array([index[ch] for ch in prime])],
                                         initial_state=state, return_state=True)
    text = prime
    p = probabilities[0, -1]
    for _ in range(length):
        logits = np.log(np.maximum(p.astype(np.float64), 1e-30)) / temperature
        p = np.exp(logits - logits.max())
        token = int(rng.choice(len(p), p=p / p.sum()))
        text += vocabulary[token]
        probabilities, state = model.forward(np.array([[token]]),
                                             initial_state=state, return_state=True)
        p = probabilities[0, -1]
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="crnn",
        description="Train a character-level RNN on a built-in text and show "
                    "the loss falling (crnn's main job on its built-in default).")
    parser.add_argument("--epochs", type=int, default=100,
                        help="passes over the text (default: 100)")
    parser.add_argument("--hidden", type=int, default=128,
                        help="hidden units (default: 128)")
    parser.add_argument("--steps", type=int, default=50,
                        help="characters per training sequence (default: 50)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="sequences per update (default: 8)")
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="Adam learning rate (default: 0.003)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    for name in ("epochs", "hidden", "steps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    demo(args.epochs, args.hidden, args.steps, args.batch_size, args.lr, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
