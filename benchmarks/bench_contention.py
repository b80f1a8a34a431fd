"""crnn and PyTorch on a busy machine: one competing process spinning.

Issue 20: at its default thread count, with one other busy process on the
machine (``python3 -c "while 1: pass"``), crnn should never be more than
1.3x slower than crnn at one thread.  For each configuration, library and
thread count this script times an LSTM training step (loss and gradients,
float32) in a child process of its own, first on the machine as it is
("quiet"), then with a spinning process it starts and stops itself
("busy"), and prints the medians and 99th percentiles, the ratio
busy 2-thread / busy 1-thread for both libraries, and how often crnn's
team went solo (_team.h).

    python benchmarks/bench_contention.py                  # ~2-3 min
    python benchmarks/bench_contention.py --seconds 3      # steadier
    python benchmarks/bench_contention.py --configs 4 --threads 1,2
    python benchmarks/bench_contention.py --json busy.json
    python benchmarks/report.py RUNS... --contention busy.json   # BENCHMARKS.md

Run it on an otherwise idle machine: "quiet" is the machine as it is, and
"busy" adds exactly one spinning process to it.  With N CPUs the default
thread count is N; the bound is checked for the --threads counts past 1.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from bench_train import CONFIGS, crnn_functions, torch_functions  # noqa: E402

# BENCHMARKS.md's configurations and the small one of the issue
ALL_CONFIGS = CONFIGS + [(100, 8, 32, 64, 32)]
BOUND = 1.3
THREAD_VARIABLES = ("CRNN_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS")
RESULT = "BENCH_CONTENTION "
SPINNER = "while 1: pass"


def time_calls(function, seconds):
    """Seconds per call of ``function()`` for about `seconds`, after a
    warm-up of a fifth of that: every call's time."""
    start = time.perf_counter()
    while time.perf_counter() - start < seconds / 5:
        function()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        before = time.perf_counter()
        function()
        times.append(time.perf_counter() - before)
    return np.array(times)


def worker(args):
    """In the child: one library, one thread count, one configuration."""
    config = tuple(int(v) for v in args.shape.split(","))
    if args.worker == "crnn":
        import crnn
        from crnn import _parallel
        crnn.set_num_threads(args.worker_threads)
        train = crnn_functions(args.cell, config)["train"]
    else:
        import torch
        torch.set_num_threads(args.worker_threads)
        train = torch_functions(args.cell, config)["train"]
    times = time_calls(train, args.seconds)
    report = {"median": float(np.median(times)), "p99": float(np.percentile(times, 99)),
              "calls": len(times)}
    if args.worker == "crnn":
        report["team"] = _parallel._team_counts()
    print(RESULT + json.dumps(report))


def run_child(lib, cell, config, threads, args):
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    command = [sys.executable, os.path.abspath(__file__), "--worker", lib,
               "--worker-threads", str(threads), "--cell", cell,
               "--shape", ",".join(map(str, config)), "--seconds", str(args.seconds)]
    done = subprocess.run(command, env=env, capture_output=True, text=True,
                          timeout=120 + 10 * args.seconds)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    tail = " | ".join(done.stderr.strip().splitlines()[-3:])
    return {"error": f"exit {done.returncode}: {tail}"}


def measure(args):
    """Every (config, load, lib, threads): the spinner runs through each
    configuration's busy block."""
    results = []
    for config in args.configs:
        for load in ("quiet", "busy"):
            spinner = (subprocess.Popen([sys.executable, "-c", SPINNER])
                       if load == "busy" else None)
            try:
                for lib in args.libs:
                    for threads in args.threads:
                        report = run_child(lib, args.cell, config, threads, args)
                        report.update(config=list(config), load=load, lib=lib,
                                      threads=threads)
                        results.append(report)
                        print(".", end="", flush=True, file=sys.stderr)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    print(file=sys.stderr)
    return results


def milliseconds(report, field):
    if "error" in report:
        return "error"
    return f"{report[field] * 1e3:.2f}"


def unique(values):
    return list(dict.fromkeys(values))


def table(results):
    """One markdown row per (config, lib, threads), in the order measured;
    the busy ratio against the same library's busy one thread.  Returns the
    lines and crnn's worst busy ratio."""
    by_key = {(tuple(r["config"]), r["load"], r["lib"], r["threads"]): r for r in results}
    lines = ["| config (T,B,D,H,K) | lib | thr | quiet median (ms) | quiet p99 | "
             "busy median | busy p99 | busy / busy 1 thr | crnn solo periods (busy) |",
             "|---|---|---|---|---|---|---|---|---|"]
    worst = 0.0
    missing = {"error": "not run"}
    for config in unique(tuple(r["config"]) for r in results):
        for lib in unique(r["lib"] for r in results):
            for threads in unique(r["threads"] for r in results):
                quiet = by_key.get((config, "quiet", lib, threads), missing)
                busy = by_key.get((config, "busy", lib, threads), missing)
                one = by_key.get((config, "busy", lib, 1), missing)
                ratio = ""
                if threads > 1 and "error" not in busy and "error" not in one:
                    value = busy["median"] / one["median"]
                    ratio = f"{value:.2f}"
                    if lib == "crnn":
                        worst = max(worst, value)
                        ratio += " ok" if value <= BOUND else " **over**"
                solo = busy.get("team", {}).get("solo_periods", "") if lib == "crnn" else ""
                lines.append(
                    f"| {config} | {lib} | {threads} | {milliseconds(quiet, 'median')} "
                    f"| {milliseconds(quiet, 'p99')} | {milliseconds(busy, 'median')} "
                    f"| {milliseconds(busy, 'p99')} | {ratio} | {solo} |")
    return lines, worst


def section(run):
    """The markdown of one run (bench_contention.py --json): what was
    measured, the table, crnn's worst ratio against the bound."""
    lines, worst = table(run["results"])
    return ([f"LSTM training step, float32; busy = one `python -c '{SPINNER}'` "
             f"beside it; {run['cpus']} CPUs; load average before the run "
             f"{run['load_before']:.2f}, after {run['load_after']:.2f}; "
             f"{run['seconds']:g} s per child process; {run['when']}.", ""]
            + lines
            + ["", f"crnn's worst busy ratio: {worst:.2f} (bound {BOUND}: "
                   f"{'met' if worst <= BOUND else 'missed'})."])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(str(i) for i in range(len(ALL_CONFIGS))),
                        help="indices into " + str(ALL_CONFIGS))
    parser.add_argument("--threads", default="1,2", help="thread counts (1 is the reference)")
    parser.add_argument("--libs", default="crnn,torch")
    parser.add_argument("--cell", default="lstm", choices=("lstm", "gru", "rnn"))
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="timed seconds per child (after a fifth of that warming up)")
    parser.add_argument("--json", help="write every child's report here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    args.configs = [ALL_CONFIGS[int(i)] for i in args.configs.split(",")]
    args.threads = sorted({1} | {int(t) for t in args.threads.split(",")})
    args.libs = args.libs.split(",")
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    results = measure(args)
    run = {"results": results, "cpus": os.cpu_count(), "seconds": args.seconds,
           "load_before": load_before, "load_after": os.getloadavg()[0],
           "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print("\n".join(section(run)))
    print(f"{time.perf_counter() - started:.0f} s in all")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(run, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
