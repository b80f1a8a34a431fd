"""The adding problem: why the source document moves from the RNN to the LSTM.

Each sequence has T steps of two inputs: a value drawn uniformly from [0, 1]
and a marker, 1 at exactly two steps (one in each half of the sequence) and
0 elsewhere.  The target, read once at the end, is the sum of the two marked
values.  Predicting the constant 1 scores an MSE of Var(u1 + u2) = 1/6 ≈ 0.167;
doing better needs a memory that spans up to T steps.

A vanilla RNN's gradient through T tanh steps vanishes, so it stays near the
baseline; the LSTM's cell state carries the marked values across the whole
sequence.  This trains both with crnn.Trainer (Adam, clipped gradients, the
same budget for each) and prints the test MSE of each model for each T:

    python examples/adding_problem.py                  # T = 100 and 200
    python examples/adding_problem.py --steps 50 --epochs 5
"""
import argparse
import time

import numpy as np

import crnn

BASELINE = 1 / 6


def adding_problem(n, steps, rng):
    """X (n, steps, 2) float32, y (n,) float32."""
    values = rng.uniform(0, 1, size=(n, steps)).astype(np.float32)
    markers = np.zeros((n, steps), dtype=np.float32)
    rows = np.arange(n)
    first = rng.integers(0, steps // 2, size=n)
    second = rng.integers(steps // 2, steps, size=n)
    markers[rows, first] = 1
    markers[rows, second] = 1
    X = np.stack([values, markers], axis=-1)
    y = values[rows, first] + values[rows, second]
    return X, y


def train(kind, X, y, Xv, yv, args):
    model = getattr(crnn, kind)(2, args.hidden, 1, output="linear",
                                return_sequences=False, seed=args.seed)
    trainer = crnn.Trainer(model, "adam", lr=args.lr, batch_size=args.batch_size,
                           clip_norm=1.0, seed=args.seed)
    trainer.fit(X, y, epochs=args.epochs, validation_data=(Xv, yv),
                early_stopping=args.patience, verbose=args.verbose)
    return model


def mse(model, X, y):
    return float(np.mean((model.predict(X)[:, 0] - y) ** 2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--train", type=int, default=10000, help="training sequences")
    parser.add_argument("--test", type=int, default=2000, help="test sequences")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--patience", type=int, default=None,
                        help="early stopping patience (default: off; the LSTM sits on "
                        "the baseline for several epochs before it finds the solution)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=["RNN", "LSTM"],
                        choices=["RNN", "LSTM", "GRU"])
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()

    rows = []
    for steps in args.steps:
        rng = np.random.default_rng(args.seed + steps)
        X, y = adding_problem(args.train, steps, rng)
        Xv, yv = adding_problem(args.test // 2, steps, rng)
        Xt, yt = adding_problem(args.test, steps, rng)
        for kind in args.models:
            print(f"--- {kind}, T = {steps}")
            started = time.perf_counter()
            model = train(kind, X, y, Xv, yv, args)
            rows.append((kind, steps, mse(model, Xt, yt), time.perf_counter() - started))

    print(f"\nTest MSE on the adding problem (baseline: constant 1, MSE {BASELINE:.3f})")
    print(f"{'model':<6} {'T':>5} {'test MSE':>10} {'/ baseline':>11} {'train time':>11}")
    for kind, steps, error, seconds in rows:
        print(f"{kind:<6} {steps:>5} {error:>10.4f} {error / BASELINE:>11.3f} {seconds:>10.0f}s")


if __name__ == "__main__":
    main()
