"""Benchmark the LSTM variants against PyTorch: the projected LSTM
(``proj_size``), beside the plain LSTM, one training step.

What is measured, float32, at (T, B, D, H, K) = CONFIG and 1 and 2 threads:
one training step (forward + BPTT, softmax output layer and cross-entropy
at every position) of

* ``lstm``: ``crnn.LSTM(D, H, K)`` against ``nn.LSTM(D, H)`` +
  ``nn.Linear(H, K)``, the baseline ratio;
* ``lstm proj``: ``crnn.LSTM(D, H, K, proj_size=P)`` against
  ``nn.LSTM(D, H, proj_size=P)`` + ``nn.Linear(P, K)``, with P = PROJ_SIZE.

Each measurement runs in its own child process with OPENBLAS_NUM_THREADS,
OMP_NUM_THREADS, MKL_NUM_THREADS and CRNN_NUM_THREADS set to the thread
count (idle pools of two libraries in one process spin against each other),
in ``--rounds`` interleaved rounds (crnn, torch, crnn, torch); the table
shows each library's best median and the ratio crnn / PyTorch (below 1:
crnn is faster).  The timing helpers are bench_train.py's.  Times on a
shared machine drift: compare the ratios of the two rows, measured in the
same run.

    python benchmarks/bench_variants.py [--rounds 3] [--target 2.0]
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_train import THREAD_ENV_VARS, make_inputs, time_calls  # noqa: E402

CONFIG = (100, 64, 64, 256, 64)
PROJ_SIZE = 128
VARIANTS = {"lstm": 0, "lstm proj": PROJ_SIZE}
RESULT_PREFIX = "BENCH_VARIANTS_RESULT "


def crnn_step(proj_size):
    import crnn
    T, B, D, H, K = CONFIG
    X, y = make_inputs(CONFIG)
    model = crnn.LSTM(D, H, K, proj_size=proj_size, dtype="float32", seed=0)
    return lambda: model.loss_and_grad(X, y)


def torch_step(proj_size):
    import torch
    import torch.nn.functional as F
    T, B, D, H, K = CONFIG
    X_np, y_np = make_inputs(CONFIG)
    X, y = torch.from_numpy(X_np), torch.from_numpy(y_np)
    torch.manual_seed(0)
    layer = torch.nn.LSTM(D, H, batch_first=True, proj_size=proj_size)
    linear = torch.nn.Linear(proj_size or H, K)

    def train():
        layer.zero_grad(set_to_none=True)
        linear.zero_grad(set_to_none=True)
        hidden, _ = layer(X)
        loss = F.cross_entropy(linear(hidden).reshape(-1, K), y.reshape(-1))
        loss.backward()
        return loss.item()

    return train


def run_worker(args):
    """In the child: time one library's step and print the result."""
    proj_size = VARIANTS[args.variant]
    if args.worker == "crnn":
        import crnn
        crnn.set_num_threads(args.threads)
        step = crnn_step(proj_size)
    else:
        import torch
        torch.set_num_threads(args.threads)
        step = torch_step(proj_size)
    seconds, repeats = time_calls(step, args.target, quick=False)
    print(RESULT_PREFIX + json.dumps({"seconds": seconds, "repeats": repeats}))


def measure(lib, variant, threads, args):
    env = dict(os.environ, **{name: str(threads) for name in THREAD_ENV_VARS})
    command = [sys.executable, os.path.abspath(__file__), "--worker", lib,
               "--variant", variant, "--threads", str(threads),
               "--target", str(args.target)]
    output = subprocess.run(command, env=env, capture_output=True, text=True,
                            check=True).stdout
    line = next(line for line in output.splitlines()
                if line.startswith(RESULT_PREFIX))
    return json.loads(line[len(RESULT_PREFIX):])["seconds"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", choices=("crnn", "torch"))
    parser.add_argument("--variant", choices=tuple(VARIANTS), default="lstm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--target", type=float, default=2.0,
                        help="seconds of timed calls per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--thread-counts", default="1,2")
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    print(f"training step, float32, (T, B, D, H, K) = {CONFIG}, "
          f"proj_size = {PROJ_SIZE}; best of {args.rounds} interleaved rounds")
    print(f"{'variant':<10} {'threads':>7} {'crnn ms':>9} {'torch ms':>9} {'ratio':>6}")
    for threads in map(int, args.thread_counts.split(",")):
        for variant in VARIANTS:
            best = {"crnn": float("inf"), "torch": float("inf")}
            for _ in range(args.rounds):
                for lib in best:
                    best[lib] = min(best[lib], measure(lib, variant, threads, args))
            print(f"{variant:<10} {threads:>7} {best['crnn'] * 1e3:>9.1f} "
                  f"{best['torch'] * 1e3:>9.1f} {best['crnn'] / best['torch']:>6.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
