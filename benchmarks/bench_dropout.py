"""Benchmark a training step of a two-layer LSTM with inter-layer dropout,
crnn against PyTorch, and the same LSTM without dropout (the ratio dropout
should keep).

What is measured, float32, at (T, B, D, H, K) = (100, 64, 64, 256, 64) by
default, at 1 and 2 threads: one training step, forward + BPTT of a
two-layer LSTM with a softmax output layer and cross-entropy at every
position, with ``dropout=P`` between the layers and without.

* crnn: ``crnn.LSTM(D, H, K, num_layers=2, dropout=P,
  dropout_first_layer=False)`` (PyTorch's placement: the input of layer 2),
  ``model.loss_and_grad(X, y, training=True, dropout_seed=i)``: one
  variational mask per sequence, a new seed every call.
* PyTorch: ``nn.LSTM(D, H, num_layers=2, dropout=P, batch_first=True)`` in
  train mode + ``nn.Linear(H, K)`` + ``F.cross_entropy``, gradients zeroed,
  forward and ``backward()`` (its dropout draws a mask per element and step).

Every library, setting and thread count runs in its own child process
(``--worker``) with OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and
CRNN_NUM_THREADS set (idle thread pools of two libraries in one process
spin against each other); rounds alternate crnn and PyTorch, and the table
shows each one's best median.  Timings on a shared machine are noisy: the
ratios (PyTorch time / crnn time, > 1: crnn faster) measured in the same
run are what to compare.  The proj_size rows live in their own script.

    python benchmarks/bench_dropout.py [--shape 100,64,64,256,64]
        [--dropout 0.25] [--threads 1 2] [--rounds 3] [--target 2.0]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def measure(function, target):
    """Median seconds of `function()` over repeats taking about `target`
    seconds, after a warm-up call."""
    function()
    started = time.perf_counter()
    function()
    once = max(time.perf_counter() - started, 1e-6)
    repeats = max(3, min(200, int(target / once)))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def crnn_step(shape, dropout):
    import numpy as np
    import crnn
    T, B, D, H, K = shape
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B, T, D), dtype=np.float32)
    y = rng.integers(0, K, size=(B, T))
    model = crnn.LSTM(D, H, K, num_layers=2, dropout=dropout,
                      dropout_first_layer=False, dtype="float32", seed=0)
    calls = iter(range(10 ** 9))
    return lambda: model.loss_and_grad(X, y, training=True, dropout_seed=next(calls))


def torch_step(shape, dropout):
    import torch
    T, B, D, H, K = shape
    torch.manual_seed(0)
    X = torch.randn(B, T, D)
    y = torch.randint(0, K, (B, T))
    lstm = torch.nn.LSTM(D, H, num_layers=2, dropout=dropout, batch_first=True)
    head = torch.nn.Linear(H, K)
    lstm.train()
    parameters = list(lstm.parameters()) + list(head.parameters())

    def step():
        for parameter in parameters:
            parameter.grad = None
        out, _ = lstm(X)
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, K), y.reshape(-1))
        loss.backward()
    return step


def worker(args):
    shape = tuple(int(v) for v in args.shape.split(","))
    threads = args.threads[0]
    if args.worker == "torch":
        import torch
        torch.set_num_threads(threads)
        step = torch_step(shape, args.dropout)
    else:
        import crnn
        crnn.set_num_threads(threads)
        step = crnn_step(shape, args.dropout)
    print(json.dumps({"seconds": measure(step, args.target)}))


def run_child(library, dropout, threads, args):
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "CRNN_NUM_THREADS"):
        env[name] = str(threads)
    out = subprocess.run(
        [sys.executable, __file__, "--worker", library, "--shape", args.shape,
         "--dropout", str(dropout), "--threads", str(threads), "--target",
         str(args.target)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="100,64,64,256,64")
    parser.add_argument("--dropout", type=float, default=0.25)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", type=float, default=2.0)
    parser.add_argument("--worker", choices=["crnn", "torch"])
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    print(f"two-layer LSTM training step, float32, (T,B,D,H,K) = ({args.shape}); "
          f"best median of {args.rounds} interleaved rounds, ms")
    print(f"{'dropout':>8} {'threads':>7} {'crnn':>9} {'PyTorch':>9} {'ratio':>7}")
    for dropout in (args.dropout, 0.0):
        for threads in args.threads:
            best = {"crnn": float("inf"), "torch": float("inf")}
            for _ in range(args.rounds):
                for library in ("crnn", "torch"):
                    best[library] = min(best[library],
                                        run_child(library, dropout, threads, args))
            print(f"{dropout:>8g} {threads:>7} {best['crnn'] * 1e3:>9.1f} "
                  f"{best['torch'] * 1e3:>9.1f} {best['torch'] / best['crnn']:>7.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
