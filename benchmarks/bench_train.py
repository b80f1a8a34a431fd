"""Benchmark crnn's vanilla tanh RNN against PyTorch and a plain-numpy RNN.

What is timed, float32, for every config (T, B, D, H, K) = (sequence length,
batch, input features, hidden units, output classes):

* ``train``: one training step, forward + BPTT of a one-layer tanh RNN with a
  softmax output layer and cross-entropy at every position.
  crnn: ``loss, grads = crnn.RNN(D, H, K, dtype="float32", seed=0)
  .loss_and_grad(X, y)``; PyTorch: ``nn.RNN(D, H, batch_first=True)`` +
  ``nn.Linear(H, K)`` + ``F.cross_entropy``, gradients zeroed, forward and
  ``backward()``; numpy: the reference RNN in this file (input projection
  hoisted into one GEMM over all T*B rows, one recurrent GEMM per step, BPTT
  with the weight gradients batched after the time loop).
* ``forward``: the probabilities (B, T, K): ``model.forward(X)``; PyTorch
  under ``torch.no_grad()`` with a softmax at the end; the numpy reference.

Inputs: X float32 (B, T, D) standard normal, y int64 (B, T) random classes.

Every measurement of one library at one thread count runs in its own child
process (``bench_rnn.py --worker LIB --threads N --configs I ...``) with
OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS set to N (and
``torch.set_num_threads(N)``), because idle thread pools of two libraries in
one process spin against each other (see ANCHORS.md). OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are passed through untouched: they choose OpenBLAS's kernel,
and the caller decides. A child times the training step and the forward pass
of one config: each is the median of repeated calls after a warm-up, the
repeat count chosen so it takes about ``--target`` seconds. Timings on a
shared 2-core machine drift by 1.1-2x from one second to the next (most at 2
threads), so each (config, thread count) is measured in ``--rounds``
interleaved rounds (crnn, torch, numpy, crnn, torch, numpy) and the table
shows the best (lowest) median; its "spread" column says how far the rounds
of one library were apart, and "wait%" how much of the time some task waited
for a CPU (Linux PSI): other work on the machine. ``--wait-idle`` waits for an
idle machine before each child and reruns the children that were disturbed.

Usage, from the repository root, with crnn installed in the environment::

    python benchmarks/bench_rnn.py                  # all of it, ~5 min idle
    python benchmarks/bench_rnn.py --quick          # short smoke run
    python benchmarks/bench_rnn.py --configs 0,1 --threads 1 --json out.json
    python benchmarks/bench_rnn.py --selfcheck      # check the numpy reference
    python benchmarks/bench_rnn.py --wait-idle 60   # on a shared machine

Run it both with OpenBLAS as the machine sets it and with OpenBLAS choosing its
own kernel, since the two kernels differ up to 2x on the GEMMs an RNN spends
its time in::

    python benchmarks/bench_rnn.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_rnn.py

The header shows which OpenBLAS kernel (core name) numpy's and scipy's
OpenBLAS actually loaded. Columns for a library that is not installed (torch)
or does not import (crnn) show "-". The table's ratios are crnn time divided by
the other library's time: below 1 means crnn is faster. GFLOP/s counts
2*T*B*H*(D+H)*3 + 2*T*B*H*K*3 FLOPs for a training step and a third of that for
a forward pass.

``--selfcheck`` checks the numpy reference in float64: against finite
differences, against PyTorch given the same weights (when torch is installed),
and, when crnn imports, compares crnn with it (float64 and float32).
"""

import argparse
import ctypes
import gc
import glob
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

CONFIGS = [
    (100, 64, 64, 256, 64),
    (100, 32, 32, 128, 32),
    (50, 1, 16, 32, 16),
    (200, 16, 128, 512, 128),
]
LIBRARIES = ("crnn", "torch", "numpy")
OPS = ("train", "forward")
RESULT_PREFIX = "BENCH_RNN_RESULT "
THREAD_ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                   "MKL_NUM_THREADS")


# ---------------------------------------------------------------------------
# The plain-numpy reference RNN
# ---------------------------------------------------------------------------

class NumpyRNN:
    """One-layer tanh RNN + softmax output + mean cross-entropy, in numpy.

    Parameters use crnn's names and shapes: U0 (H, D), W0 (H, H), b0 (H,),
    V (K, H), c (K,). The initial state is zero. Inside, everything is
    time-major, (T, B, .), so each time step is a contiguous block of rows.
    """

    def __init__(self, input_size, hidden_size, output_size, dtype=np.float32,
                 seed=0):
        rng = np.random.default_rng(seed)
        bound = 1.0 / np.sqrt(hidden_size)
        shapes = {
            "U0": (hidden_size, input_size),
            "W0": (hidden_size, hidden_size),
            "b0": (hidden_size,),
            "V": (output_size, hidden_size),
            "c": (output_size,),
        }
        self.dtype = np.dtype(dtype)
        self.params = {
            name: rng.uniform(-bound, bound, shape).astype(self.dtype)
            for name, shape in shapes.items()
        }

    def _hidden_states(self, X):
        """Return X time-major (T*B, D) and all h, (T, B, H)."""
        U, W, b = self.params["U0"], self.params["W0"], self.params["b0"]
        batch, steps, features = X.shape
        x_rows = np.ascontiguousarray(
            X.transpose(1, 0, 2), dtype=self.dtype).reshape(-1, features)
        # Z = X U^T + b for all T*B rows at once; then h(t) overwrites z(t).
        hidden = (x_rows @ U.T).reshape(steps, batch, -1)
        hidden += b
        step_product = np.empty((batch, U.shape[0]), dtype=self.dtype)
        for t in range(steps):
            if t > 0:
                # z(t) += h(t-1) W^T   (B, H) += (B, H)(H, H)^T
                np.matmul(hidden[t - 1], W.T, out=step_product)
                hidden[t] += step_product
            np.tanh(hidden[t], out=hidden[t])
        return x_rows, hidden

    def _logits(self, hidden):
        """Output layer over all T*B rows: (T*B, K), max-shifted per row."""
        logits = hidden.reshape(-1, hidden.shape[2]) @ self.params["V"].T
        logits += self.params["c"]
        logits -= logits.max(axis=1, keepdims=True)
        return logits

    def forward(self, X):
        """Softmax probabilities, (B, T, K)."""
        batch, steps = X.shape[:2]
        _, hidden = self._hidden_states(X)
        probs = self._logits(hidden)
        np.exp(probs, out=probs)
        probs /= probs.sum(axis=1, keepdims=True)
        return np.ascontiguousarray(
            probs.reshape(steps, batch, -1).transpose(1, 0, 2))

    def loss_and_grad(self, X, y):
        """Mean cross-entropy over all B*T positions and its gradients."""
        W, V = self.params["W0"], self.params["V"]
        batch, steps = X.shape[:2]
        rows = batch * steps
        x_rows, hidden = self._hidden_states(X)
        hidden_rows = hidden.reshape(rows, -1)
        targets = np.ascontiguousarray(y.T).reshape(-1)
        row_index = np.arange(rows)

        # Softmax + cross-entropy; loss = log-sum-exp - logit of the target.
        d_logits = self._logits(hidden)
        target_logits = d_logits[row_index, targets]
        np.exp(d_logits, out=d_logits)
        sums = d_logits.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(sums[:, 0]) - target_logits))
        d_logits /= sums
        d_logits[row_index, targets] -= 1      # dL/do = softmax - onehot
        d_logits *= self.dtype.type(1.0 / rows)

        grads = {
            "V": d_logits.T @ hidden_rows,
            "c": d_logits.sum(axis=0),
        }
        # d_z starts as the output layer's share of dL/dh(t) for every t; the
        # loop adds the recurrent share and multiplies by tanh' = 1 - h^2.
        d_z = (d_logits @ V).reshape(hidden.shape)
        d_h_next = np.empty_like(d_z[0])
        tanh_grad = np.empty_like(d_z[0])
        for t in range(steps - 1, -1, -1):
            if t < steps - 1:
                # dL/dh(t) += dz(t+1) W   (B, H) += (B, H)(H, H)
                np.matmul(d_z[t + 1], W, out=d_h_next)
                d_z[t] += d_h_next
            np.multiply(hidden[t], hidden[t], out=tanh_grad)
            np.subtract(1, tanh_grad, out=tanh_grad)
            d_z[t] *= tanh_grad
        d_z_rows = d_z.reshape(rows, -1)
        # Weight gradients as single GEMMs over all rows (h(-1) = 0).
        grads["U0"] = d_z_rows.T @ x_rows
        grads["W0"] = (d_z[1:].reshape(-1, d_z.shape[2]).T
                       @ hidden[:-1].reshape(-1, hidden.shape[2]))
        grads["b0"] = d_z_rows.sum(axis=0)
        return loss, grads


# ---------------------------------------------------------------------------
# Helpers shared by the parent and the workers
# ---------------------------------------------------------------------------

def training_flops(T, B, D, H, K):
    """FLOPs of a forward + BPTT step: cell GEMMs plus the output layer."""
    return 2 * T * B * H * (D + H) * 3 + 2 * T * B * H * K * 3


def make_inputs(config, seed=0):
    T, B, D, H, K = config
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, T, D), dtype=np.float32)
    y = rng.integers(0, K, size=(B, T), dtype=np.int64)
    return X, y


def openblas_info(load_scipy=True):
    """Runtime OpenBLAS core name and config of numpy's and scipy's OpenBLAS.

    The build string in ``numpy.show_config()`` names the build machine's
    core, not the kernel chosen at run time, so ask the loaded libraries.
    With ``load_scipy=False`` scipy's OpenBLAS is queried only if it is
    already loaded: a worker should not start a thread pool it does not use.
    """
    info = {}
    libraries = [("numpy", np, "64_")]
    if load_scipy or "scipy.linalg" in sys.modules:
        try:
            import scipy
            import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS)
            libraries.append(("scipy", scipy, ""))
        except ImportError:
            pass
    for name, module, suffix in libraries:
        package_dir = os.path.dirname(module.__file__)
        paths = glob.glob(package_dir + ".libs/*openblas*.so*")
        if not paths:
            info[name] = "OpenBLAS library not found (not a wheel build?)"
            continue
        try:
            lib = ctypes.CDLL(paths[0])
            get_core = getattr(lib, "scipy_openblas_get_corename" + suffix)
            get_config = getattr(lib, "scipy_openblas_get_config" + suffix)
            get_threads = getattr(lib,
                                  "scipy_openblas_get_num_threads" + suffix)
        except (OSError, AttributeError) as error:
            info[name] = f"cannot query {os.path.basename(paths[0])}: {error}"
            continue
        get_core.restype = ctypes.c_char_p
        get_config.restype = ctypes.c_char_p
        info[name] = {
            "core": get_core().decode(),
            "config": get_config().decode(),
            "threads": get_threads(),
        }
    return info


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------
# Worker: one library at one thread count, all selected configs
# ---------------------------------------------------------------------------

def time_calls(function, target_seconds, quick):
    """Median seconds per call of ``function()`` after a warm-up."""
    gc.collect()
    warmup_times = []
    warmup_start = time.perf_counter()
    min_warmup = 1 if quick else 3
    while (len(warmup_times) < min_warmup
           or time.perf_counter() - warmup_start < 0.15 * target_seconds):
        start = time.perf_counter()
        function()
        warmup_times.append(time.perf_counter() - start)
        if len(warmup_times) >= 200:
            break
    estimate = float(np.median(warmup_times[-5:]))
    repeats = int(target_seconds / max(estimate, 1e-7))
    repeats = max(3 if quick else 5, min(repeats, 5000))
    times = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        function()
        times[i] = time.perf_counter() - start
    return float(np.median(times)), repeats


def crnn_functions(config):
    import crnn
    T, B, D, H, K = config
    X, y = make_inputs(config)
    model = crnn.RNN(D, H, K, dtype="float32", seed=0)
    return (lambda: model.loss_and_grad(X, y)), (lambda: model.forward(X))


def numpy_functions(config):
    T, B, D, H, K = config
    X, y = make_inputs(config)
    model = NumpyRNN(D, H, K, dtype=np.float32, seed=0)
    return (lambda: model.loss_and_grad(X, y)), (lambda: model.forward(X))


def torch_functions(config):
    import torch
    import torch.nn.functional as F
    T, B, D, H, K = config
    X_np, y_np = make_inputs(config)
    X = torch.from_numpy(X_np)
    y = torch.from_numpy(y_np)
    torch.manual_seed(0)
    rnn = torch.nn.RNN(D, H, batch_first=True)
    linear = torch.nn.Linear(H, K)

    def train():
        rnn.zero_grad(set_to_none=True)
        linear.zero_grad(set_to_none=True)
        hidden, _ = rnn(X)
        logits = linear(hidden)
        loss = F.cross_entropy(logits.reshape(-1, K), y.reshape(-1))
        loss.backward()
        return loss.item()

    def forward():
        with torch.no_grad():
            hidden, _ = rnn(X)
            return torch.softmax(linear(hidden), dim=-1)

    return train, forward


def run_worker(args):
    """Measure one library at one thread count; print one JSON line."""
    threads = args.threads_for_worker
    report = {"lib": args.worker, "threads": threads, "results": []}
    try:
        if args.worker == "crnn":
            import crnn
            report["version"] = getattr(crnn, "__version__", "?")
            make_functions = crnn_functions
        elif args.worker == "torch":
            import torch
            torch.set_num_threads(threads)
            report["version"] = torch.__version__
            report["torch_threads"] = torch.get_num_threads()
            report["torch_mkl"] = torch.backends.mkl.is_available()
            make_functions = torch_functions
        else:
            report["version"] = np.__version__
            make_functions = numpy_functions
    except ImportError as error:
        report["error"] = f"{type(error).__name__}: {error}"
        report["import_failed"] = True
        print(RESULT_PREFIX + json.dumps(report), flush=True)
        return
    report["openblas"] = openblas_info(load_scipy=False)

    for index in args.config_indices:
        config = CONFIGS[index]
        try:
            train, forward = make_functions(config)
        except Exception as error:  # a broken model must not end the run
            message = f"{type(error).__name__}: {error}"
            for op in OPS:
                report["results"].append(
                    {"config": index, "op": op, "error": message})
            continue
        for op, function in zip(OPS, (train, forward)):
            try:
                seconds, repeats = time_calls(function, args.target,
                                              args.quick)
            except Exception as error:  # report it, time the rest
                report["results"].append({
                    "config": index, "op": op,
                    "error": f"{type(error).__name__}: {error}"})
                continue
            report["results"].append({"config": index, "op": op,
                                      "ms": seconds * 1e3,
                                      "repeats": repeats})
    print(RESULT_PREFIX + json.dumps(report), flush=True)


# ---------------------------------------------------------------------------
# Parent: spawn workers, collect, print the table
# ---------------------------------------------------------------------------

def cpu_wait_microseconds():
    """Linux CPU pressure: total us some task waited for a CPU, or None.

    Other work on the machine (a compiler, a test run) shows up here; our
    own children alone on the cores do not. Used to flag disturbed rows.
    """
    try:
        with open("/proc/pressure/cpu") as handle:
            first_line = handle.readline()
        return int(first_line.rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def other_cpu_load(seconds=1.0):
    """Fraction of all CPUs busy over ``seconds`` while this process sleeps."""
    def busy_and_total():
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields) - idle, sum(fields)
    try:
        busy_before, total_before = busy_and_total()
        time.sleep(seconds)
        busy_after, total_after = busy_and_total()
    except (OSError, ValueError, IndexError):
        return None
    return (busy_after - busy_before) / max(total_after - total_before, 1)


def spawn_worker(lib, threads, config_index, args):
    """Run one worker child; return its report (a dict, maybe an error)."""
    env = dict(os.environ)
    for name in THREAD_ENV_VARS:
        env[name] = str(threads)
    command = [
        sys.executable, os.path.abspath(__file__),
        "--worker", lib, "--threads", str(threads),
        "--configs", str(config_index), "--target", str(args.target),
    ]
    if args.quick:
        command.append("--quick")
    wait_before, start = cpu_wait_microseconds(), time.perf_counter()
    try:
        completed = subprocess.run(command, env=env, capture_output=True,
                                   text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"lib": lib, "threads": threads,
                "error": f"worker timed out after {args.timeout:g} s"}
    wait_after, elapsed = cpu_wait_microseconds(), time.perf_counter() - start
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            report = json.loads(line[len(RESULT_PREFIX):])
            if wait_before is not None and wait_after is not None:
                report["cpu_wait"] = (wait_after - wait_before) / (
                    elapsed * 1e6)
                for result in report["results"]:
                    result["cpu_wait"] = report["cpu_wait"]
            return report
    stderr_tail = completed.stderr.strip().splitlines()[-3:]
    return {"lib": lib, "threads": threads,
            "error": (f"worker exited with {completed.returncode}: "
                      + " | ".join(stderr_tail))}


def measure_when_quiet(lib, threads, config_index, args):
    """spawn_worker, but with --wait-idle wait for a quiet machine first.

    With --wait-idle, a child during which other work kept a task waiting
    for a CPU more than 5 % of the time is run again (three tries at most;
    the least disturbed one is kept).
    """
    if args.wait_idle <= 0:
        return spawn_worker(lib, threads, config_index, args)
    reports = []
    for _ in range(3):
        deadline = time.perf_counter() + args.wait_idle
        while time.perf_counter() < deadline:
            load = other_cpu_load(0.5)
            if load is None or load < 0.1:
                break
        report = spawn_worker(lib, threads, config_index, args)
        reports.append(report)
        if report.get("cpu_wait", 0) <= 0.05:
            break
    return min(reports, key=lambda r: r.get("cpu_wait", 0))


def print_header(args):
    print("bench_rnn: crnn vanilla tanh RNN vs PyTorch vs plain numpy, "
          "float32")
    print(f"python {platform.python_version()}  numpy {np.__version__}  "
          f"scipy {package_version('scipy') or '-'}  "
          f"torch {package_version('torch') or 'not installed'}  "
          f"crnn {package_version('crnn') or 'not installed'}")
    print(f"os.cpu_count() = {os.cpu_count()}  machine {platform.machine()}")
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        print(f"{name} = {os.environ.get(name, '(unset)')}")
    for lib, info in openblas_info().items():
        if isinstance(info, dict):
            print(f"{lib}'s OpenBLAS: core {info['core']}  ({info['config']})")
        else:
            print(f"{lib}'s OpenBLAS: {info}")
    load = other_cpu_load()
    if load is not None:
        print(f"CPU busy before the run (other processes): {load:.0%}"
              + ("  WARNING: the machine is not idle, timings will suffer"
                 if load > 0.1 else ""))
    print(f"each number: best of {args.rounds} interleaved round(s) of "
          f"medians over ~{args.target:g} s of calls, one process each")
    print(flush=True)


def format_ms(value):
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def format_ratio(numerator, denominator):
    if numerator is None or denominator is None:
        return "-"
    return f"{numerator / denominator:.2f}"


def collect(reports):
    """Medians and CPU-wait fractions by (config, threads, op, lib); errors.

    Each value is a list with one entry per round.
    """
    medians, cpu_waits = {}, {}
    errors = []
    for report in reports:
        lib, threads = report["lib"], report["threads"]
        if "error" in report:
            errors.append(f"{lib} threads={threads}: {report['error']}")
            continue
        for result in report["results"]:
            key = (result["config"], threads, result["op"], lib)
            if "error" in result:
                errors.append(f"{lib} threads={threads} "
                              f"config {CONFIGS[result['config']]} "
                              f"{result['op']}: {result['error']}")
            else:
                medians.setdefault(key, []).append(result["ms"])
                cpu_waits.setdefault(key, []).append(result.get("cpu_wait"))
    return medians, cpu_waits, sorted(set(errors))


def build_rows(medians, cpu_waits, args):
    rows = []
    for index in args.config_indices:
        config = CONFIGS[index]
        for threads in args.thread_counts:
            for op in OPS:
                rounds = {lib: medians.get((index, threads, op, lib))
                          for lib in LIBRARIES}
                best = {lib: min(values) if values else None
                        for lib, values in rounds.items()}
                # Largest max/min over the rounds of any library: how far
                # apart repeated measurements landed on this row.
                spreads = [max(values) / min(values)
                           for values in rounds.values()
                           if values and len(values) > 1]
                # CPU wait (PSI) during the worker that gave each best median.
                waits = [cpu_waits[(index, threads, op, lib)][
                             values.index(best[lib])]
                         for lib, values in rounds.items() if values]
                waits = [w for w in waits if w is not None]
                flops = training_flops(*config)
                if op == "forward":
                    flops /= 3
                gflops = (flops / (best["crnn"] * 1e-3) / 1e9
                          if best["crnn"] else None)
                rows.append({
                    "config": list(config), "threads": threads, "op": op,
                    "crnn_ms": best["crnn"], "torch_ms": best["torch"],
                    "numpy_ms": best["numpy"], "crnn_gflops": gflops,
                    "spread": max(spreads) if spreads else None,
                    "cpu_wait": max(waits) if waits else None,
                    "rounds_ms": rounds,
                })
    return rows


def print_table(rows):
    header = (f"{'config (T,B,D,H,K)':<22}{'thr':>4} {'op':<8}"
              f"{'crnn ms':>10}{'torch ms':>10}{'numpy ms':>10}"
              f"{'crnn/torch':>12}{'crnn/numpy':>12}{'crnn GFLOP/s':>14}"
              f"{'spread':>8}{'wait%':>7}")
    print(header)
    print("-" * len(header))
    for row in rows:
        config = "(" + ",".join(map(str, row["config"])) + ")"
        gflops = ("-" if row["crnn_gflops"] is None
                  else f"{row['crnn_gflops']:.1f}")
        spread = "-" if row["spread"] is None else f"{row['spread']:.2f}"
        wait = ("-" if row["cpu_wait"] is None
                else f"{100 * row['cpu_wait']:.0f}")
        print(f"{config:<22}{row['threads']:>4} {row['op']:<8}"
              f"{format_ms(row['crnn_ms']):>10}"
              f"{format_ms(row['torch_ms']):>10}"
              f"{format_ms(row['numpy_ms']):>10}"
              f"{format_ratio(row['crnn_ms'], row['torch_ms']):>12}"
              f"{format_ratio(row['crnn_ms'], row['numpy_ms']):>12}"
              f"{gflops:>14}{spread:>8}{wait:>7}")


def describe_worker(report):
    cores = ", ".join(f"{name} {info['core']} {info['threads']} thr"
                      for name, info in report["openblas"].items()
                      if isinstance(info, dict))
    text = (f"worker {report['lib']:<5} threads={report['threads']}: "
            f"{report['lib']} {report.get('version')}; OpenBLAS {cores}")
    if report["lib"] == "torch":
        text += (f"; torch threads {report.get('torch_threads')}, "
                 f"MKL {report.get('torch_mkl')}")
    return text


def run_parent(args):
    print_header(args)
    libs = [lib for lib in LIBRARIES if lib in args.libs]
    if "torch" in libs and package_version("torch") is None:
        print("torch is not installed: its columns are skipped.\n")
        libs.remove("torch")
    reports = []
    start = time.perf_counter()
    # Interleave: for each config and thread count, the rounds run the
    # libraries one after another, so a slow spell of the machine hits all.
    for index in args.config_indices:
        for threads in args.thread_counts:
            group_start = time.perf_counter()
            for _ in range(args.rounds):
                for lib in list(libs):
                    report = measure_when_quiet(lib, threads, index, args)
                    reports.append(report)
                    if report.get("import_failed"):
                        libs.remove(lib)    # it will not import next time
            print(f"  {CONFIGS[index]} threads={threads}: "
                  f"{time.perf_counter() - group_start:.1f} s",
                  file=sys.stderr, flush=True)
    print(f"  total {time.perf_counter() - start:.0f} s", file=sys.stderr,
          flush=True)

    medians, cpu_waits, errors = collect(reports)
    rows = build_rows(medians, cpu_waits, args)
    print_table(rows)
    print("\nratios: crnn time / other time (below 1: crnn faster); "
          "spread: largest max/min of one library's round medians;\n"
          "wait%: share of the time some task waited for a CPU (Linux PSI) "
          "during the measurements shown; above a few % the machine was "
          "busy with other work")
    seen = set()
    for report in reports:
        key = (report["lib"], report["threads"])
        if "openblas" in report and key not in seen:
            seen.add(key)
            print(describe_worker(report))
    if errors:
        print("\nerrors:")
        for error in errors:
            print("  " + error)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({
                "environment": {
                    "python": platform.python_version(),
                    "numpy": np.__version__,
                    "scipy": package_version("scipy"),
                    "torch": package_version("torch"),
                    "crnn": package_version("crnn"),
                    "cpu_count": os.cpu_count(),
                    "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                    "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
                    "openblas": openblas_info(),
                },
                "target_seconds": args.target,
                "rounds": args.rounds,
                "rows": rows,
                "errors": errors,
            }, handle, indent=1)
        print(f"\nwrote {args.json}")
    sys.stdout.flush()


# ---------------------------------------------------------------------------
# --selfcheck: is the numpy reference a correct RNN?
# ---------------------------------------------------------------------------

def max_relative_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def check(name, error, tolerance, failures):
    status = "ok" if error < tolerance else "FAIL"
    print(f"  {name:<40} max rel. error {error:.2e}  "
          f"(tolerance {tolerance:.0e})  {status}")
    if status != "ok":
        failures.append(name)


def selfcheck_finite_differences(failures):
    T, B, D, H, K = 6, 3, 4, 5, 7
    X, y = make_inputs((T, B, D, H, K), seed=1)
    X = X.astype(np.float64)
    model = NumpyRNN(D, H, K, dtype=np.float64, seed=1)
    _, grads = model.loss_and_grad(X, y)
    step = 1e-6
    print("numpy reference vs central finite differences (float64):")
    for name, param in model.params.items():
        numeric = np.empty_like(param)
        flat, flat_numeric = param.reshape(-1), numeric.reshape(-1)
        for i in range(flat.size):
            saved = flat[i]
            flat[i] = saved + step
            loss_plus, _ = model.loss_and_grad(X, y)
            flat[i] = saved - step
            loss_minus, _ = model.loss_and_grad(X, y)
            flat[i] = saved
            flat_numeric[i] = (loss_plus - loss_minus) / (2 * step)
        check(f"d loss / d {name}", max_relative_error(grads[name], numeric),
              1e-6, failures)


def selfcheck_torch(failures):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        print("numpy reference vs PyTorch: skipped (torch not installed)")
        return
    T, B, D, H, K = 9, 4, 6, 8, 5
    X, y = make_inputs((T, B, D, H, K), seed=2)
    X = X.astype(np.float64)
    model = NumpyRNN(D, H, K, dtype=np.float64, seed=2)
    loss, grads = model.loss_and_grad(X, y)
    probs = model.forward(X)

    rnn = torch.nn.RNN(D, H, batch_first=True).double()
    linear = torch.nn.Linear(H, K).double()
    p = model.params
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(p["U0"]))
        rnn.weight_hh_l0.copy_(torch.from_numpy(p["W0"]))
        rnn.bias_ih_l0.copy_(torch.from_numpy(p["b0"]))
        rnn.bias_hh_l0.zero_()
        linear.weight.copy_(torch.from_numpy(p["V"]))
        linear.bias.copy_(torch.from_numpy(p["c"]))
    hidden, _ = rnn(torch.from_numpy(X))
    logits = linear(hidden)
    torch_loss = F.cross_entropy(logits.reshape(-1, K),
                                 torch.from_numpy(y).reshape(-1))
    torch_loss.backward()
    torch_grads = {
        "U0": rnn.weight_ih_l0.grad, "W0": rnn.weight_hh_l0.grad,
        "b0": rnn.bias_ih_l0.grad, "V": linear.weight.grad,
        "c": linear.bias.grad,
    }
    print("numpy reference vs PyTorch, same weights (float64):")
    check("forward probabilities", max_relative_error(
        probs, torch.softmax(logits, dim=-1).detach().numpy()), 1e-10,
        failures)
    check("loss", max_relative_error(loss, torch_loss.item()), 1e-10,
          failures)
    for name, grad in torch_grads.items():
        check(f"d loss / d {name}", max_relative_error(grads[name],
                                                       grad.numpy()),
              1e-10, failures)


def selfcheck_crnn(failures):
    try:
        import crnn
    except ImportError as error:
        print(f"crnn vs numpy reference: skipped (crnn: {error})")
        return
    cases = [("float64", (9, 4, 6, 8, 5), 1e-10),
             ("float32", CONFIGS[1], 1e-4)]
    for dtype, config, tolerance in cases:
        T, B, D, H, K = config
        X, y = make_inputs(config, seed=3)
        model = crnn.RNN(D, H, K, dtype=dtype, seed=0)
        reference = NumpyRNN(D, H, K, dtype=dtype)
        reference.params = {name: np.array(model.params[name])
                            for name in reference.params}
        print(f"crnn vs numpy reference, same weights ({dtype}, {config}):")
        loss, grads = model.loss_and_grad(X, y)
        ref_loss, ref_grads = reference.loss_and_grad(X, y)
        check("forward probabilities", max_relative_error(
            model.forward(X), reference.forward(X)), tolerance, failures)
        check("loss", max_relative_error(loss, ref_loss), tolerance, failures)
        for name, grad in ref_grads.items():
            check(f"d loss / d {name}", max_relative_error(grads[name], grad),
                  tolerance, failures)


def run_selfcheck():
    failures = []
    selfcheck_finite_differences(failures)
    selfcheck_torch(failures)
    selfcheck_crnn(failures)
    if failures:
        print(f"selfcheck FAILED: {', '.join(failures)}")
        return 1
    print("selfcheck passed")
    return 0


# ---------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=None,
                        help="comma-separated indices into CONFIGS "
                             f"(0-{len(CONFIGS) - 1}); default all")
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--libs", default=",".join(LIBRARIES),
                        help="subset of crnn,torch,numpy")
    parser.add_argument("--quick", action="store_true",
                        help="short measurements, one round: a smoke run")
    parser.add_argument("--target", type=float, default=None,
                        help="seconds per measurement (default 1.0, "
                             "0.2 with --quick)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds, best median kept "
                             "(default 2, 1 with --quick)")
    parser.add_argument("--wait-idle", type=float, default=0,
                        metavar="SECONDS",
                        help="on a shared machine: before each child wait "
                             "up to SECONDS for the CPUs to be idle, and "
                             "rerun a child that other work disturbed")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds before a worker is abandoned")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the results to this JSON file")
    parser.add_argument("--selfcheck", action="store_true",
                        help="check the numpy reference's gradients, "
                             "then exit")
    parser.add_argument("--worker", choices=LIBRARIES,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    try:
        args.config_indices = (list(range(len(CONFIGS)))
                               if args.configs is None else
                               [int(i) for i in args.configs.split(",")])
        args.thread_counts = [int(n) for n in args.threads.split(",")]
    except ValueError:
        parser.error("--configs and --threads take comma-separated integers")
    if any(not 0 <= i < len(CONFIGS) for i in args.config_indices):
        parser.error(f"--configs indices must be in 0..{len(CONFIGS) - 1}")
    if any(n < 1 for n in args.thread_counts):
        parser.error("--threads must be positive")
    args.libs = args.libs.split(",")
    if not set(args.libs) <= set(LIBRARIES):
        parser.error(f"--libs must be a subset of {','.join(LIBRARIES)}")
    if args.target is None:
        args.target = 0.2 if args.quick else 1.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    if args.worker:
        args.threads_for_worker = args.thread_counts[0]
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.selfcheck:
        return run_selfcheck()
    if args.worker:
        run_worker(args)
        return 0
    run_parent(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
