"""Instruction-count regression guard: fixed small workloads under callgrind.

Timings on a shared machine drift by 1.1-2x; the number of instructions a
fixed workload executes does not. This script runs a few small crnn
workloads (float32, one thread: crnn's and OpenBLAS's) in a child process
under ``valgrind --tool=callgrind`` and compares the instructions per repetition
(callgrind's ``Ir``) with the counts recorded in ``instructions.json`` for
the same key (machine, Python, numpy, scipy, OpenBLAS version and core)::

    python benchmarks/instructions.py              # compare; exit 1 on growth
    python benchmarks/instructions.py --record "why"   # write this key's counts
    python benchmarks/instructions.py --tolerance 5 --json now.json

Workloads (seeded inputs; each model is built and called twice before
anything is counted):

* ``loss_and_grad`` of ``crnn.LSTM``, ``crnn.GRU`` and ``crnn.RNN``
  (softmax output) at (T, B, D, H, K) = (50, 1, 16, 32, 16) and
  (20, 8, 16, 64, 16);
* ``forward`` of the LSTM at (20, 8, 16, 64, 16);
* 100 steps of ``stream.step(x, out=out)`` of ``crnn.LSTM(16, 128,
  output=None)`` at batch size 1, from a reset state.

How: one child process (``--child``) imports crnn, builds every workload,
and runs each one in two windows of N and 2N repetitions, each window
between two calls of ``os.getppid()``. Callgrind runs with
``--dump-before=getppid``, so each window's instructions land in a dump of
their own; the instructions per repetition are (Ir(2N) - Ir(N)) / N, which
cancels the window's fixed cost (the marker calls, the loop set-up).
Python's start-up and imports are outside every window. The child runs
with PYTHONHASHSEED=0 and a small fixed environment (valgrind places the
process at the same addresses every time): two runs count the same to the
instruction; a larger environment, or crnn built non-editable in another
venv as CI does, moves the counts by under 0.15%.

Under valgrind the CPU shows no AVX-512, so OpenBLAS and crnn's
``target_clones`` functions pick their AVX2 paths; the OpenBLAS core in the
key is the one loaded under valgrind (from the child).

Exit status: 0 when no workload grew by more than ``--tolerance`` percent
(default 2), also when there is no record for this key or valgrind is not
installed (both said in the output); 1 when a workload grew; 2 when the
measurement itself failed. ``--record`` writes this key's entry and exits 0.
``--self-test`` checks the guard: one workload does 5% more repetitions than
it reports, and the comparison must fail on that workload alone (two runs).
About 1 min per run on a 2-core machine.
"""

import argparse
import datetime
import gc
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD_PATH = os.path.join(HERE, "instructions.json")

# name -> (kind, cell, (T, B, D, H, K), N).  N: the first window's repetitions.
WORKLOADS = {
    "lstm loss_and_grad 50x1x16x32x16": ("train", "LSTM", (50, 1, 16, 32, 16), 20),
    "gru loss_and_grad 50x1x16x32x16": ("train", "GRU", (50, 1, 16, 32, 16), 10),
    "rnn loss_and_grad 50x1x16x32x16": ("train", "RNN", (50, 1, 16, 32, 16), 10),
    "lstm loss_and_grad 20x8x16x64x16": ("train", "LSTM", (20, 8, 16, 64, 16), 3),
    "gru loss_and_grad 20x8x16x64x16": ("train", "GRU", (20, 8, 16, 64, 16), 3),
    "rnn loss_and_grad 20x8x16x64x16": ("train", "RNN", (20, 8, 16, 64, 16), 5),
    "lstm forward 20x8x16x64x16": ("forward", "LSTM", (20, 8, 16, 64, 16), 5),
    "lstm stream 100 steps D16 H128": ("stream", "LSTM", (100, 1, 16, 128, None), 3),
}
# --self-test adds one repetition per N to this workload's windows (+5 %).
SELF_TEST_WORKLOAD = "lstm loss_and_grad 50x1x16x32x16"
STREAM_STEPS = 100
MARKER = "getppid"          # libc's; os.getppid() calls it and nothing else here


# ---------------------------------------------------------------------------
# The child: runs under callgrind
# ---------------------------------------------------------------------------

def build_workload(kind, cell, shape):
    """A function running one repetition of the workload."""
    import numpy as np
    import crnn

    steps, batch, inputs, hidden, outputs = shape
    rng = np.random.default_rng(1)
    if kind == "stream":
        model = getattr(crnn, cell)(inputs, hidden, output=None,
                                    dtype="float32", seed=0)
        stream = model.stream(batch_size=1)
        xs = [rng.standard_normal(inputs, dtype=np.float32)
              for _ in range(steps)]
        out = np.empty(hidden, dtype=np.float32)

        def run():
            stream.reset()
            for x in xs:
                stream.step(x, out=out)
        return run
    model = getattr(crnn, cell)(inputs, hidden, outputs, dtype="float32", seed=0)
    X = rng.standard_normal((batch, steps, inputs), dtype=np.float32)
    y = rng.integers(0, outputs, size=(batch, steps), dtype=np.int64)
    if kind == "forward":
        return lambda: model.forward(X)
    return lambda: model.loss_and_grad(X, y)


def import_openblas_info():
    sys.path.insert(0, HERE)
    from bench_train import openblas_info
    return openblas_info


def child(extra_workload):
    import numpy
    import scipy
    import crnn

    runs = {name: build_workload(*spec[:3]) for name, spec in WORKLOADS.items()}
    windows = []
    for name, run in runs.items():
        n = WORKLOADS[name][3]
        extra = 1 if name == extra_workload else 0
        run()
        run()
        for multiple in (1, 2):
            repetitions = multiple * (n + extra)
            gc.collect()
            os.getppid()
            for _ in range(repetitions):
                run()
            os.getppid()
            windows.append([name, multiple * n])
    # Everything not counted comes after the windows: the OpenBLAS query
    # imports another script, whose start-up is not ours to measure.
    info = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "crnn": crnn.__version__,
        "crnn_path": os.path.dirname(crnn.__file__),
        "openblas": import_openblas_info()(),
        "windows": windows,
    }
    print("INSTRUCTIONS_CHILD " + json.dumps(info))


# ---------------------------------------------------------------------------
# The parent: runs the child, reads callgrind's dumps
# ---------------------------------------------------------------------------

class MeasurementError(Exception):
    pass


def child_environment():
    """A small fixed environment: fewer differences in the child's heap
    between a developer's shell and CI, no hash randomisation, one thread."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Python >= 3.11: the script's directory is not put on sys.path, so
        # what lies in benchmarks/ does not change the child's start-up.
        "PYTHONSAFEPATH": "1",
        "CRNN_NUM_THREADS": "1",        # crnn's own threads (crnn.threads)
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    # These choose OpenBLAS's kernel: the caller decides (the key says which).
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def dump_total(path):
    with open(path) as handle:
        for line in handle:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise MeasurementError(f"no totals line in {path}")


def measure(valgrind, extra_workload=None):
    """Run the child under callgrind; return (info, counts per repetition,
    per-window details)."""
    with tempfile.TemporaryDirectory(prefix="crnn-instructions-") as work:
        command = [
            valgrind, "--tool=callgrind", f"--dump-before={MARKER}",
            f"--callgrind-out-file={work}/callgrind.out",
            f"--log-file={work}/valgrind.log",
            sys.executable, os.path.abspath(__file__), "--child",
        ]
        if extra_workload:
            command += ["--extra", extra_workload]
        result = subprocess.run(command, env=child_environment(), cwd=HERE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        with open(f"{work}/valgrind.log", errors="replace") as handle:
            log = handle.read()
        lines = [line for line in result.stdout.splitlines()
                 if line.startswith("INSTRUCTIONS_CHILD ")]
        if result.returncode != 0 or not lines:
            raise MeasurementError(
                f"the child under callgrind failed (exit {result.returncode})\n"
                f"--- stderr\n{result.stderr[-3000:]}\n--- valgrind log\n{log[-3000:]}")
        info = json.loads(lines[-1].split(" ", 1)[1])
        parts = sorted((int(name.rsplit(".", 1)[1]), name)
                       for name in os.listdir(work)
                       if re.fullmatch(r"callgrind\.out\.\d+", name))
        totals = [dump_total(os.path.join(work, name)) for _, name in parts]
    windows = info.pop("windows")
    # Dump 1: start-up up to the first marker; then, per window, the window
    # itself and the stretch up to the next window's first marker.
    if len(totals) != 2 * len(windows) or [p for p, _ in parts] != list(
            range(1, len(totals) + 1)):
        raise MeasurementError(
            f"callgrind wrote {len(totals)} dumps, expected {2 * len(windows)} "
            f"(two per window): is '{MARKER}' called elsewhere, or not seen?")
    counts, details = {}, {}
    for i in range(0, len(windows), 2):
        (name, n), (name2, n2) = windows[i], windows[i + 1]
        assert name == name2 and n2 == 2 * n
        single, double = totals[2 * i + 1], totals[2 * i + 3]
        per_repetition = (double - single) / n
        counts[name] = round(per_repetition)
        details[name] = {"N": n, "Ir(N)": single, "Ir(2N)": double,
                         "fixed": round(single - n * per_repetition)}
    return info, counts, details


def record_key(info):
    """What changes the counts besides crnn's own code.  Patch releases of
    numpy and scipy are left out (the OpenBLAS scipy bundles is named by its
    own version); Python's minor version, the OpenBLAS version and the core it
    picked under valgrind are in."""
    def minor(version):
        return ".".join(version.split(".")[:2])
    scipy_blas = info["openblas"].get("scipy")
    if isinstance(scipy_blas, dict):
        match = re.match(r"OpenBLAS (\S+)", scipy_blas["config"])
        blas = f"openblas{match.group(1) if match else '?'}-{scipy_blas['core']}"
    else:
        blas = "openblas-unknown"
    return (f"{info['machine']}-py{minor(info['python'])}-numpy{minor(info['numpy'])}"
            f"-scipy{minor(info['scipy'])}-{blas}")


def load_records():
    if not os.path.exists(RECORD_PATH):
        return {}
    with open(RECORD_PATH) as handle:
        return json.load(handle).get("records", {})


def write_record(key, info, counts, details, reason):
    records = load_records()
    previous = records.get(key)
    records[key] = {
        "recorded": datetime.date.today().isoformat(),
        "reason": reason,
        "previous": ({"recorded": previous["recorded"], "counts": previous["counts"]}
                     if previous else None),
        "python": info["python"],
        "numpy": info["numpy"],
        "scipy": info["scipy"],
        "openblas": info["openblas"],
        "counts": counts,
        "windows": details,
    }
    document = {
        "about": ("Instructions per repetition (callgrind Ir) of the workloads "
                  "of benchmarks/instructions.py, per key; written by "
                  "`python benchmarks/instructions.py --record`."),
        "records": dict(sorted(records.items())),
    }
    with open(RECORD_PATH, "w") as handle:
        json.dump(document, handle, indent=1)
        handle.write("\n")


def compare(recorded, now, tolerance):
    """Rows (name, recorded, now, change %) and the names that grew by more
    than ``tolerance`` percent."""
    rows, grew = [], []
    for name, count in now.items():
        before = recorded.get(name)
        change = None if not before else 100.0 * (count - before) / before
        rows.append((name, before, count, change))
        if change is not None and change > tolerance:
            grew.append(name)
    return rows, grew


def print_table(rows, tolerance):
    width = max(len(row[0]) for row in rows)
    print(f"{'workload':<{width}}  {'recorded':>12}  {'now':>12}  {'change':>8}")
    for name, before, count, change in rows:
        if change is None:
            before_text, change_text, flag = "-", "-", "  (not recorded)"
        else:
            before_text, change_text, flag = f"{before:,}", f"{change:+.2f}%", ""
            if change > tolerance:
                flag = "  GREW"
            elif change < -tolerance:
                flag = "  fell (consider --record)"
        print(f"{name:<{width}}  {before_text:>12}  {count:>12,}  {change_text:>8}{flag}")


def header(key, info, seconds):
    blas = info["openblas"]
    scipy_blas = blas.get("scipy")
    core = scipy_blas["core"] if isinstance(scipy_blas, dict) else scipy_blas
    print(f"crnn {info['crnn']} from {info['crnn_path']}; python {info['python']}, "
          f"numpy {info['numpy']}, scipy {info['scipy']}; OpenBLAS core under "
          f"valgrind: {core}; measured in {seconds:.0f} s")
    print(f"key: {key}")


def self_test(valgrind, tolerance):
    """The guard must catch a real regression: one workload does 5% more
    repetitions than it reports, and the comparison must fail on it alone."""
    start = time.monotonic()
    info, counts, _ = measure(valgrind)
    key = record_key(info)
    record = load_records().get(key)
    ok = True
    if record:
        baseline = record["counts"]
        rows, grew = compare(baseline, counts, tolerance)
        print(f"self-test: an unchanged run against the record for {key}:")
        print_table(rows, tolerance)
        if grew:
            print(f"self-test: FAILED: the unchanged run grew: {grew}")
            ok = False
    else:
        print(f"self-test: no record for {key}; comparing against this run")
        baseline = counts
    _, inflated, _ = measure(valgrind, extra_workload=SELF_TEST_WORKLOAD)
    rows, grew = compare(baseline, inflated, tolerance)
    print(f"self-test: {SELF_TEST_WORKLOAD!r} doing 5% more work:")
    print_table(rows, tolerance)
    if grew != [SELF_TEST_WORKLOAD]:
        print(f"self-test: FAILED: expected exactly [{SELF_TEST_WORKLOAD!r}] "
              f"to grow, got {grew}")
        ok = False
    drift = max(abs(inflated[name] - counts[name]) / counts[name] * 100
                for name in counts if name != SELF_TEST_WORKLOAD)
    print(f"self-test: other workloads, run to run: at most {drift:.3f}% apart")
    print(f"self-test: {'passed' if ok else 'FAILED'} "
          f"({time.monotonic() - start:.0f} s)")
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", metavar="REASON",
                        help="write this key's counts to instructions.json, "
                             "with why they changed (kept beside them, with "
                             "the counts they replace)")
    parser.add_argument("--tolerance", type=float, default=2.0,
                        help="percent growth that fails (default 2)")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the key, counts and windows here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--extra", help=argparse.SUPPRESS)
    parser.add_argument("--self-test", action="store_true",
                        help="check that a 5%% regression in one workload fails")
    args = parser.parse_args()

    if args.child:
        child(args.extra)
        return 0
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("instructions.py: valgrind is not installed: the instruction-count "
              "guard did not run (apt-get install valgrind)")
        return 0
    try:
        if args.self_test:
            return self_test(valgrind, args.tolerance)
        start = time.monotonic()
        info, counts, details = measure(valgrind)
    except MeasurementError as error:
        print(f"instructions.py: {error}", file=sys.stderr)
        return 2
    seconds = time.monotonic() - start
    key = record_key(info)
    header(key, info, seconds)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"key": key, "info": info, "counts": counts,
                       "windows": details}, handle, indent=1)
    if args.record:
        write_record(key, info, counts, details, args.record)
        print_table(compare({}, counts, args.tolerance)[0], args.tolerance)
        print(f"recorded {len(counts)} counts for {key} in {RECORD_PATH}")
        return 0
    record = load_records().get(key)
    if record is None:
        print_table(compare({}, counts, args.tolerance)[0], args.tolerance)
        print(f"no record for this key: {key}; run with --record "
              f"(not a failure: nothing to compare with)")
        return 0
    rows, grew = compare(record["counts"], counts, args.tolerance)
    print_table(rows, args.tolerance)
    if grew:
        print(f"FAILED: {len(grew)} workload(s) grew by more than "
              f"{args.tolerance}% in instructions: {', '.join(grew)}")
        return 1
    print(f"OK: no workload grew by more than {args.tolerance}% "
          f"(record of {record['recorded']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
