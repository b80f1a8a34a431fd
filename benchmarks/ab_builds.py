"""A/B of two builds of crnn on BENCHMARKS.md's crnn rows, interleaved.

    python benchmarks/ab_builds.py OLD_PYTHON NEW_PYTHON [--rounds 5]
        [--target 0.4] [--cells lstm,rnn,gru] [--configs 0,1,2,3]
        [--threads 1,2] [--json out.json]

OLD_PYTHON and NEW_PYTHON are interpreters of two virtual environments,
each with its own crnn installed (say, the engine before and after a
change).  For every row of bench_train.py's table that times crnn (the
training step of each cell, and the LSTM forward, at each config and thread
count) and for the LSTM stream step of bench_stream.py, each round runs one
child process per build, in alternating order, each child timing the row
as bench_train.py does (the median of ~--target seconds of calls after a
warm-up).  Each row prints both builds' medians over the rounds, the ratio
new/old of the medians, and the spread of the per-round ratios (min-max),
which is the row's own noise on this machine at this moment.

The children inherit the environment: run it once as the machine sets
OpenBLAS and once with ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE``.
It prints ratios of crnn against crnn; bench_train.py's tables compare with
PyTorch.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_train import CONFIGS, make_inputs, time_calls  # noqa: E402

CHILD = r"""
import json, sys
sys.path.insert(0, {here!r})
import numpy as np
import crnn
from bench_train import make_inputs, time_calls
kind, cell, config, threads, target = json.loads(sys.argv[1])
crnn.set_num_threads(threads)
if kind == "stream":
    model = crnn.LSTM(16, 128, output=None, dtype="float32", seed=0)
    stream = model.stream(1)
    x = np.random.default_rng(0).standard_normal(16).astype(np.float32)
    out = np.empty(128, np.float32)
    function = lambda: stream.step(x, out=out)
else:
    T, B, D, H, K = config
    X, y = make_inputs(config)
    model = {{"lstm": crnn.LSTM, "rnn": crnn.RNN, "gru": crnn.GRU}}[cell](
        D, H, K, dtype="float32", seed=0)
    function = ((lambda: model.loss_and_grad(X, y)) if kind == "train"
                else (lambda: model.forward(X)))
print(json.dumps(time_calls(function, target, False)[0]))
"""


def child_time(python, case, target):
    env = dict(os.environ)
    threads = case[3]
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "CRNN_NUM_THREADS"):
        env[name] = str(threads)
    result = subprocess.run([python, "-c", CHILD.format(here=HERE),
                             json.dumps(list(case[:4]) + [target])],
                            capture_output=True, text=True, env=env, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def cases(cells, configs, threads):
    for thread_count in threads:
        for index in configs:
            for cell in cells:
                yield ("train", cell, CONFIGS[index], thread_count)
            if "lstm" in cells:
                yield ("forward", "lstm", CONFIGS[index], thread_count)
    yield ("stream", "lstm", None, 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.4)
    parser.add_argument("--cells", default="lstm,rnn,gru")
    parser.add_argument("--configs", default="0,1,2,3")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} "
          f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}")
    print(f"{'row':40s} {'old ms':>9s} {'new ms':>9s} {'new/old':>8s}  rounds' range")
    for case in cases(args.cells.split(","), [int(c) for c in args.configs.split(",")],
                      [int(t) for t in args.threads.split(",")]):
        old, new = [], []
        for round_number in range(args.rounds):
            order = ((args.old, old), (args.new, new))
            if round_number % 2:
                order = order[::-1]
            for python, times in order:
                times.append(child_time(python, case, args.target))
        ratios = np.array(new) / np.array(old)
        kind, cell, config, threads = case
        name = (f"{cell} {kind} {tuple(config)} {threads} thr" if config
                else f"{cell} {kind} B=1 D=16 H=128")
        row = {"row": name, "old": float(np.median(old)), "new": float(np.median(new)),
               "ratio": float(np.median(new) / np.median(old)),
               "low": float(ratios.min()), "high": float(ratios.max())}
        rows.append(row)
        print(f"{name:40s} {row['old'] * 1e3:9.3f} {row['new'] * 1e3:9.3f} "
              f"{row['ratio']:8.3f}  {row['low']:.3f}-{row['high']:.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
