"""Benchmark crnn's LSTM, RNN and GRU against PyTorch: one table, every target.

What is measured, float32, for every config (T, B, D, H, K) = (sequence
length, batch, input features, hidden units, output classes) in CONFIGS, at 1
and 2 threads:

* ``train``: one training step, forward + BPTT of a one-layer LSTM / tanh RNN
  / GRU with a softmax output layer and cross-entropy at every position.
  crnn: ``loss, grads = crnn.LSTM(D, H, K, dtype="float32", seed=0)
  .loss_and_grad(X, y)`` (``crnn.RNN``, ``crnn.GRU`` alike); PyTorch:
  ``nn.LSTM(D, H, batch_first=True)`` (``nn.RNN``, ``nn.GRU``) +
  ``nn.Linear(H, K)`` + ``F.cross_entropy``, gradients zeroed, forward and
  ``backward()``; for the RNN also the plain-numpy reference RNN in this file
  (input projection hoisted into one GEMM over all T*B rows, one recurrent
  GEMM per step, BPTT with the weight gradients batched after the time loop).
* ``forward`` (LSTM): the probabilities (B, T, K): ``model.forward(X)``;
  PyTorch under ``torch.no_grad()`` with a softmax at the end.
* ``memory``: the peak resident memory a training step adds. In each
  library's child process, after the imports, the model and the inputs are
  made: gc.collect(), write "5" to /proc/self/clear_refs (resets the
  high-water mark VmHWM to the current VmRSS), read VmRSS, run the first
  training step, read VmHWM. The number is VmHWM - VmRSS: everything the
  first step touched (workspaces, gradients, autograd graph, lazily loaded
  kernels), in MiB. Linux only.
* ``efficiency`` (LSTM, the large configs 0 and 3): crnn's training GFLOP/s,
  counting the LSTM cell only, 2*T*B*4H*(D+H)*3 FLOPs per step, against the
  GFLOP/s of ``scipy.linalg.blas.sgemm`` at the recurrent GEMM's shape
  (B x H)(H x 4H), measured in the same crnn child process at the same
  thread count (Fortran-ordered operands and output, no copies; the better
  of B x 4H = (B x H)(H x 4H) and (B x H)(4H x H)^T is kept).
* ``sweep`` (LSTM, 1 thread, crnn and PyTorch): training-step time against
  the batch size, B in SWEEP_BATCHES at (100, B, 64, 256, 64), and against the
  hidden size, H in SWEEP_HIDDEN at (100, 32, 64, H, 64): the data of the plot
  ``report.py`` draws.
* ``stream``: one streaming LSTM step at B=1, D=16, H=128, state carried,
  against ``torch.nn.LSTMCell`` and ONNX Runtime: ``bench_stream.py --json``
  run as a child process (its own method; see its docstring).

Inputs: X float32 (B, T, D) standard normal, y int64 (B, T) random classes.

Every measurement of one library, cell, config and thread count runs in its
own child process (``bench_train.py --worker LIB --cell CELL --shape T,B,D,H,K
--threads N ...``) with OPENBLAS_NUM_THREADS, OMP_NUM_THREADS,
MKL_NUM_THREADS and CRNN_NUM_THREADS set to N (and ``torch.set_num_threads(N)``,
``crnn.set_num_threads(N)``), because idle
thread pools of two libraries in one process spin against each other
(PyTorch's OpenMP pool and crnn's team), and so the memory of a first training step is measured in a
fresh process. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are passed through
untouched: they choose OpenBLAS's kernel, and the caller decides. Each time
is the median of repeated calls after a warm-up, the repeat count chosen so
it takes about ``--target`` seconds. Timings on a shared 2-core machine drift
by 1.1-2x from one second to the next (most at 2 threads), so each (cell,
config, thread count) is measured in ``--rounds`` interleaved rounds (crnn,
torch, crnn, torch) and the table shows the best (lowest) median; "spread"
says how far the rounds of one library were apart, and "wait%" how much of
the time some task waited for a CPU (Linux PSI): other work on the machine.
``--wait-idle`` waits for an idle machine before each child and reruns the
children that other work disturbed. Each child also times a fixed piece of
numpy work before and after its measurements (``machine_probe``): the
machine itself has slow spells that no CPU-pressure figure shows, and the
"probe" column says how slow it was against the run's fastest probe.

Usage, from the repository root, with crnn installed in the environment::

    python benchmarks/bench_train.py                  # everything, ~10 min idle
    python benchmarks/bench_train.py --quick          # smoke run, ~3 min
    python benchmarks/bench_train.py --cells lstm --configs 0,1 --threads 1
    python benchmarks/bench_train.py --wait-idle 60 --json out.json
    python benchmarks/report.py out.json [more.json]  # BENCHMARKS.md + PNG
    python benchmarks/bench_train.py --selfcheck      # check the numpy RNN

Run it both with OpenBLAS as the machine sets it and with OpenBLAS choosing its
own kernel, since the two kernels differ up to 2x on the GEMMs a recurrent
network spends its time in::

    python benchmarks/bench_train.py --json machine.json
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python benchmarks/bench_train.py --json unset.json

The header shows which OpenBLAS kernel (core name) numpy's and scipy's
OpenBLAS actually loaded. Columns for a library that is not installed (torch,
onnxruntime) or does not import (crnn) show "-". Ratios are crnn divided by
the other (time, memory; below 1: crnn better), except the efficiency rows:
crnn's GFLOP/s divided by sgemm's. GFLOP/s counts the recurrent cell only:
2*T*B*G*H*(D+H)*3 FLOPs per training step, a third of that per forward pass,
G = 4 (LSTM), 3 (GRU), 1 (RNN).

``--selfcheck`` checks the numpy reference RNN in float64: against finite
differences, against PyTorch given the same weights (when torch is
installed), and, when crnn imports, compares crnn with it (float64 and
float32).
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
import tempfile
import time

import numpy as np

CONFIGS = [
    (100, 64, 64, 256, 64),
    (100, 32, 32, 128, 32),
    (50, 1, 16, 32, 16),
    (200, 16, 128, 512, 128),
]
LARGE_CONFIGS = (0, 3)          # the efficiency rows
CELLS = ("lstm", "rnn", "gru")
GATES = {"lstm": 4, "rnn": 1, "gru": 3}
LIBRARIES = ("crnn", "torch", "numpy")
SWEEP_BATCHES = (1, 4, 16, 64, 128)
SWEEP_HIDDEN = (32, 64, 128, 256, 512)
QUICK_SWEEP_BATCHES = (1, 16, 128)
QUICK_SWEEP_HIDDEN = (32, 128, 512)


def sweep_batch_config(batch):
    return (100, batch, 64, 256, 64)


def sweep_hidden_config(hidden):
    return (100, 32, 64, hidden, 64)


# The targets. Time and memory: crnn / PyTorch at most this much;
# efficiency: crnn's GFLOP/s at least this share of sgemm's.
TRAIN_TARGETS = {
    "lstm": {1: (0.75, 0.6, 0.15, 0.8), 2: (1.0, 0.8, 0.15, 1.0)},
    "rnn": {1: (0.5,) * 4, 2: (0.7,) * 4},
    "gru": {1: (0.5,) * 4, 2: (0.7,) * 4},
}
FORWARD_TARGET = 1.0
EFFICIENCY_TARGET = 0.75
MEMORY_TARGET = 1.0

RESULT_PREFIX = "BENCH_TRAIN_RESULT "
THREAD_ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                   "MKL_NUM_THREADS", "CRNN_NUM_THREADS")
HERE = os.path.dirname(os.path.abspath(__file__))


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
# Helpers shared by the parent, the workers, bench_stream.py and report.py
# ---------------------------------------------------------------------------

def cell_flops(cell, config, op="train"):
    """FLOPs of the recurrent cell's GEMMs: 2*T*B*G*H*(D+H), x3 to train."""
    T, B, D, H, K = config
    flops = 2 * T * B * GATES[cell] * H * (D + H)
    return flops * 3 if op == "train" else flops


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


def wait_for_idle(seconds):
    """Wait up to ``seconds`` for the other processes to leave the CPUs."""
    if seconds <= 0:
        return
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        load = other_cpu_load(0.5)
        if load is None or load < 0.1:
            return


def machine_probe(threads, repeats=5):
    """Milliseconds a fixed piece of work takes on ``threads`` cores at once.

    Each of ``threads`` Python threads computes np.sin of a 256 KiB float32
    array 40 times (numpy releases the GIL in the loop; no BLAS, so the
    library under test and its thread settings play no part); the slowest
    thread's time, best of ``repeats``.  About 1.4 ms on an idle machine.

    It tells a slow state of the machine from a slow library: on the
    project's virtual machine both cores at times run at one half to two
    thirds of their speed for seconds to minutes (the two virtual CPUs
    apparently sharing one physical core), and a child measured then is
    slow whatever its library does.  The parent compares each child's
    probes with the fastest any child of the run measured (PROBE_SLOW).
    """
    import threading
    source = np.linspace(0, 10, 1 << 16, dtype=np.float32)
    outputs = [np.empty_like(source) for _ in range(threads)]
    best = float("inf")
    for _ in range(repeats):
        barrier, times = threading.Barrier(threads), [0.0] * threads

        def work(index):
            barrier.wait()
            start = time.perf_counter()
            for _ in range(40):
                np.sin(source, out=outputs[index])
            times[index] = time.perf_counter() - start
        pool = [threading.Thread(target=work, args=(i,))
                for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        best = min(best, max(times))
    return best * 1e3


def wait_for_fast_machine(threads, fastest_ms, seconds=5.0):
    """machine_probe until it reads within PROBE_SLOW of ``fastest_ms`` or
    ``seconds`` have passed (at once without ``fastest_ms``); the last
    reading.  A child started in a slow spell waits for its end."""
    deadline = time.perf_counter() + seconds
    while True:
        ms = machine_probe(threads)
        if (fastest_ms is None or ms <= PROBE_SLOW * fastest_ms
                or time.perf_counter() > deadline):
            return ms
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# Worker: one library, one cell, one config, one thread count
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


def read_status_kib(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def peak_memory_of(function):
    """Peak RSS increase (MiB) during ``function()``, or an error string.

    Resets the high-water mark to the current RSS (``echo 5 >
    /proc/self/clear_refs``), calls ``function`` once and reads VmHWM.
    """
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        baseline = read_status_kib("VmRSS")
    except OSError as error:
        return None, f"memory not measured: {error}"
    function()
    peak = read_status_kib("VmHWM")
    return {"baseline_mib": baseline / 1024, "peak_mib": peak / 1024,
            "increase_mib": (peak - baseline) / 1024}, None


def crnn_build_stamp(crnn):
    """When crnn's compiled extensions were last written (UTC), a build id.

    A developer rebuilding in place during a run changes what is measured:
    the report says which builds a run's crnn rows come from.
    """
    folder = os.path.dirname(crnn.__file__)
    paths = [os.path.join(folder, name) for name in os.listdir(folder)
             if name.endswith((".so", ".pyd"))]
    if not paths:
        return None
    newest = max(os.path.getmtime(path) for path in paths)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(newest))


def crnn_functions(cell, config):
    import crnn
    T, B, D, H, K = config
    X, y = make_inputs(config)
    model_class = {"lstm": crnn.LSTM, "rnn": crnn.RNN, "gru": crnn.GRU}[cell]
    model = model_class(D, H, K, dtype="float32", seed=0)
    return {"train": lambda: model.loss_and_grad(X, y),
            "forward": lambda: model.forward(X)}


def numpy_functions(cell, config):
    if cell != "rnn":
        raise ValueError("the numpy reference is an RNN only")
    T, B, D, H, K = config
    X, y = make_inputs(config)
    model = NumpyRNN(D, H, K, dtype=np.float32, seed=0)
    return {"train": lambda: model.loss_and_grad(X, y),
            "forward": lambda: model.forward(X)}


def torch_functions(cell, config):
    import torch
    import torch.nn.functional as F
    T, B, D, H, K = config
    X_np, y_np = make_inputs(config)
    X = torch.from_numpy(X_np)
    y = torch.from_numpy(y_np)
    torch.manual_seed(0)
    layer_class = {"lstm": torch.nn.LSTM, "rnn": torch.nn.RNN,
                   "gru": torch.nn.GRU}[cell]
    layer = layer_class(D, H, batch_first=True)
    linear = torch.nn.Linear(H, K)

    def train():
        layer.zero_grad(set_to_none=True)
        linear.zero_grad(set_to_none=True)
        hidden, _ = layer(X)
        logits = linear(hidden)
        loss = F.cross_entropy(logits.reshape(-1, K), y.reshape(-1))
        loss.backward()
        return loss.item()

    def forward():
        with torch.no_grad():
            hidden, _ = layer(X)
            return torch.softmax(linear(hidden), dim=-1)

    return {"train": train, "forward": forward}


def sgemm_functions(batch, hidden):
    """The recurrent GEMM (B x H)(H x 4H) through scipy's sgemm, two layouts.

    Fortran-ordered operands and a Fortran-ordered output overwritten in
    place, so f2py copies nothing: what is timed is OpenBLAS.
    """
    from scipy.linalg.blas import sgemm
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((batch, hidden),
                                              dtype=np.float32))
    b = np.asfortranarray(rng.standard_normal((hidden, 4 * hidden),
                                              dtype=np.float32))
    b_transposed = np.asfortranarray(b.T)
    c = np.zeros((batch, 4 * hidden), dtype=np.float32, order="F")
    return {
        "NN": lambda: sgemm(1.0, a, b, 0.0, c, overwrite_c=1),
        "NT": lambda: sgemm(1.0, a, b_transposed, 0.0, c, trans_b=1,
                            overwrite_c=1),
    }


def run_worker(args):
    """Measure one library, cell, config and thread count; print JSON."""
    threads = args.threads_for_worker
    config = args.shape
    report = {"lib": args.worker, "threads": threads, "cell": args.cell,
              "config": list(config), "results": {}}
    try:
        if args.worker == "crnn":
            import crnn
            report["version"] = getattr(crnn, "__version__", "?")
            report["crnn_build"] = crnn_build_stamp(crnn)
            if hasattr(crnn, "set_num_threads"):
                crnn.set_num_threads(threads)
                report["crnn_threads"] = crnn.get_num_threads()
            make_functions = crnn_functions
        elif args.worker == "torch":
            import torch
            torch.set_num_threads(threads)
            report["version"] = torch.__version__
            report["torch_threads"] = torch.get_num_threads()
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

    try:
        functions = make_functions(args.cell, config)
        if "train" in args.ops:
            # First, in a fresh process: the memory of the first step.
            memory, note = peak_memory_of(functions["train"])
            report["memory"] = memory
            if note:
                report["memory_note"] = note
        probes = [wait_for_fast_machine(threads, args.probe_fast)]
        for op in args.ops:
            seconds, repeats = time_calls(functions[op], args.target,
                                          args.quick)
            report["results"][op] = {"ms": seconds * 1e3, "repeats": repeats}
        report["probe_ms"] = probes + [machine_probe(threads)]
        if args.sgemm:
            T, B, D, H, K = config
            flops = 2 * B * H * 4 * H
            layouts = {}
            for layout, function in sgemm_functions(B, H).items():
                seconds, repeats = time_calls(function, args.target / 2,
                                              args.quick)
                layouts[layout] = flops / seconds / 1e9
            report["sgemm_gflops"] = layouts
    except Exception as error:  # a broken model must not end the run
        report["error"] = f"{type(error).__name__}: {error}"
    print(RESULT_PREFIX + json.dumps(report), flush=True)


# ---------------------------------------------------------------------------
# Parent: plan the jobs, spawn workers, collect, build the rows
# ---------------------------------------------------------------------------

def plan_jobs(args):
    """{(cell, config, threads): {"ops", "libs", "sgemm", "sweep"}}, ordered."""
    jobs = {}

    def add(cell, config, threads, ops, libs, sgemm=False, sweep=False):
        job = jobs.setdefault((cell, tuple(config), threads), {
            "ops": [], "libs": [], "sgemm": False, "sweep": False})
        job["ops"] += [op for op in ops if op not in job["ops"]]
        job["libs"] += [lib for lib in libs
                        if lib in args.libs and lib not in job["libs"]]
        job["sgemm"] |= sgemm
        job["sweep"] |= sweep

    for index in args.config_indices:
        for threads in args.thread_counts:
            for cell in args.cells:
                ops = ["train", "forward"] if cell == "lstm" else ["train"]
                libs = ["crnn", "torch"] + (["numpy"] if cell == "rnn" else [])
                add(cell, CONFIGS[index], threads, ops, libs,
                    sgemm=cell == "lstm" and index in LARGE_CONFIGS)
    if args.sweep and "lstm" in args.cells:
        batches = QUICK_SWEEP_BATCHES if args.quick else SWEEP_BATCHES
        hidden = QUICK_SWEEP_HIDDEN if args.quick else SWEEP_HIDDEN
        for config in ([sweep_batch_config(b) for b in batches]
                       + [sweep_hidden_config(h) for h in hidden]):
            add("lstm", config, 1, ["train"], ["crnn", "torch"], sweep=True)
    return jobs


def spawn_worker(lib, cell, config, threads, job, args):
    """Run one worker child; return its report (a dict, maybe an error)."""
    env = dict(os.environ)
    for name in THREAD_ENV_VARS:
        env[name] = str(threads)
    command = [
        sys.executable, os.path.abspath(__file__),
        "--worker", lib, "--cell", cell, "--threads", str(threads),
        "--shape", ",".join(map(str, config)), "--target", str(args.target),
        "--ops", ",".join(job["ops"]),
    ]
    if args.quick:
        command.append("--quick")
    if job["sgemm"] and lib == "crnn":
        command.append("--sgemm")
    if args.wait_idle > 0 and threads in args.probe_reference:
        command += ["--probe-fast", str(args.probe_reference[threads])]
    failed = {"lib": lib, "threads": threads, "cell": cell,
              "config": list(config), "results": {}}
    wait_before, start = cpu_wait_microseconds(), time.perf_counter()
    try:
        completed = subprocess.run(command, env=env, capture_output=True,
                                   text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        failed["error"] = f"worker timed out after {args.timeout:g} s"
        return failed
    wait_after, elapsed = cpu_wait_microseconds(), time.perf_counter() - start
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            report = json.loads(line[len(RESULT_PREFIX):])
            if wait_before is not None and wait_after is not None:
                report["cpu_wait"] = (wait_after - wait_before) / (
                    elapsed * 1e6)
            return report
    stderr_tail = completed.stderr.strip().splitlines()[-3:]
    failed["error"] = (f"worker exited with {completed.returncode}: "
                       + " | ".join(stderr_tail))
    return failed


def measure_when_quiet(lib, cell, config, threads, job, args):
    """spawn_worker, but with --wait-idle wait for a quiet machine first.

    With --wait-idle, a child during which other work kept a task waiting
    for a CPU more than 5 % of the time, or whose machine_probe read more
    than PROBE_SLOW times the run's fastest, is run again (three tries at
    most; the least disturbed one is kept).
    """
    if args.wait_idle <= 0:
        return note_probes(
            spawn_worker_retrying(lib, cell, config, threads, job, args), args)
    reports = []
    for _ in range(3):
        wait_for_idle(args.wait_idle)
        report = note_probes(
            spawn_worker_retrying(lib, cell, config, threads, job, args), args)
        reports.append(report)
        if ((report.get("cpu_wait", 0) <= NOISY_WAIT
                and (report["slowdown_now"] or 1) <= PROBE_SLOW)
                or report.get("import_failed") or out_of_wait_budget(args)):
            break
    return min(reports, key=lambda r: (
        (r["slowdown_now"] or 1) > PROBE_SLOW, r.get("cpu_wait", 0)))


def note_probes(report, args):
    """Add the child's probes to the run's fastest (args.probe_reference)
    and note its slowdown against them as of now ("slowdown_now")."""
    for ms in report.get("probe_ms") or ():
        fastest = args.probe_reference.get(report["threads"], ms)
        args.probe_reference[report["threads"]] = min(ms, fastest)
    report["slowdown_now"] = probe_slowdown(report, args.probe_reference)
    return report


def spawn_worker_retrying(lib, cell, config, threads, job, args):
    """spawn_worker; if the library does not import, retry for ~a minute.

    crnn may be being rebuilt in place by a developer: an import that fails
    for a moment should not drop crnn from the rest of the run.
    """
    for attempt in range(7):
        report = spawn_worker(lib, cell, config, threads, job, args)
        if not report.get("import_failed") or attempt == 6:
            return report
        print(f"  {lib} does not import ({report.get('error')}); retrying "
              "in 10 s", file=sys.stderr, flush=True)
        time.sleep(10)
    return report


def out_of_wait_budget(args):
    """After --wait-budget seconds of run time, stop waiting and rerunning."""
    if time.perf_counter() - args.started > args.wait_budget:
        if args.wait_idle > 0:
            print(f"  --wait-budget {args.wait_budget:g} s used up: no more "
                  "waiting for an idle machine", file=sys.stderr, flush=True)
            args.wait_idle = 0
        return True
    return False


def run_stream(args):
    """bench_stream.py --json as a child; its parsed JSON, or an error."""
    command = [sys.executable, os.path.join(HERE, "bench_stream.py")]
    if args.quick:
        command += ["--rounds", "2", "--target", "0.05"]
    attempts = []
    for _ in range(3 if args.wait_idle > 0 else 1):
        wait_for_idle(args.wait_idle)
        handle, path = tempfile.mkstemp(prefix="bench_stream_", suffix=".json")
        os.close(handle)
        try:
            completed = subprocess.run(command + ["--json", path],
                                       capture_output=True, text=True,
                                       timeout=args.timeout)
            with open(path) as result:
                data = json.load(result)
        except (subprocess.TimeoutExpired, OSError, ValueError) as error:
            tail = ""
            if isinstance(error, (OSError, ValueError)):
                tail = " | ".join(completed.stderr.strip().splitlines()[-3:])
            data = {"error": f"bench_stream.py failed: "
                             f"{type(error).__name__}: {error} {tail}".strip()}
        finally:
            os.unlink(path)
        attempts.append(data)
        if (data.get("cpu_wait") or 0) <= 0.05 or out_of_wait_budget(args):
            break
    return min(attempts, key=lambda d: d.get("cpu_wait") or 0)


def best_and_spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return min(values), (max(values) / min(values) if len(values) > 1
                         else None)


def probe_reference(reports):
    """{threads: the fastest machine_probe of the run's children}."""
    fastest = {}
    for report in reports:
        for ms in report.get("probe_ms") or ():
            threads = report["threads"]
            fastest[threads] = min(ms, fastest.get(threads, ms))
    return fastest


def probe_slowdown(report, reference):
    """The slower of a child's two probes against ``reference``, or None."""
    probes = report.get("probe_ms")
    if not probes or report["threads"] not in reference:
        return None
    return max(probes) / min(reference[report["threads"]], min(probes))


def collect(reports):
    """By (cell, config, threads, lib): the list of that worker's reports
    (each given its "probe_slowdown" against the run's fastest probe)."""
    by_key, errors = {}, []
    reference = probe_reference(reports)
    for report in reports:
        report["probe_slowdown"] = probe_slowdown(report, reference)
        key = (report["cell"], tuple(report["config"]), report["threads"],
               report["lib"])
        if "error" in report:
            errors.append(f"{report['lib']} {report['cell']} "
                          f"threads={report['threads']} "
                          f"config {tuple(report['config'])}: "
                          f"{report['error']}")
        if report.get("results") or report.get("memory"):
            by_key.setdefault(key, []).append(report)
    return by_key, sorted(set(errors))


def op_stats(by_key, cell, config, threads, lib, op):
    """(best ms, spread, cpu wait and probe slowdown of the best round) or
    Nones."""
    values, rounds = [], []
    for report in by_key.get((cell, tuple(config), threads, lib), []):
        if op in report["results"]:
            values.append(report["results"][op]["ms"])
            rounds.append(report)
    best, spread = best_and_spread(values)
    if best is None:
        return None, None, None, None
    chosen = rounds[values.index(best)]
    return best, spread, chosen.get("cpu_wait"), chosen.get("probe_slowdown")


def make_row(what, cell, config, threads, crnn_value, other_value, other,
             unit, target, at_least=False, spreads=(), waits=(), note="",
             gflops=None, slowdowns=()):
    ratio = (crnn_value / other_value
             if crnn_value is not None and other_value else None)
    met = None
    if ratio is not None and target is not None:
        met = ratio >= target if at_least else ratio <= target
    spreads = [s for s in spreads if s is not None]
    # waits: (crnn's child, the other's child); None where not measured
    crnn_wait, other_wait = (list(waits) + [None, None])[:2]
    waits = [w for w in (crnn_wait, other_wait) if w is not None]
    # slowdowns: each child's machine_probe against the run's fastest
    crnn_slow, other_slow = (list(slowdowns) + [None, None])[:2]
    return {
        "what": what, "cell": cell,
        "config": list(config) if config else None, "threads": threads,
        "crnn": crnn_value, "other": other_value, "vs": other, "unit": unit,
        "ratio": ratio, "gflops": gflops, "target": target,
        "at_least": at_least, "met": met,
        "spread": max(spreads) if spreads else None,
        "cpu_wait": max(waits) if waits else None, "crnn_wait": crnn_wait,
        "other_wait": other_wait, "crnn_slowdown": crnn_slow,
        "other_slowdown": other_slow, "note": note,
    }


def build_rows(by_key, stream, args, reference=None):
    rows = []
    configs = [(i, CONFIGS[i]) for i in args.config_indices]
    # Training steps: LSTM, RNN, GRU; then the LSTM forward pass.
    for cell in args.cells:
        for index, config in configs:
            for threads in args.thread_counts:
                c, c_spread, c_wait, c_slow = op_stats(
                    by_key, cell, config, threads, "crnn", "train")
                t, t_spread, t_wait, t_slow = op_stats(
                    by_key, cell, config, threads, "torch", "train")
                note = ""
                if cell == "rnn":
                    n, n_spread, n_wait, n_slow = op_stats(
                        by_key, cell, config, threads, "numpy", "train")
                    if n is not None:
                        note = f"numpy {format_value(n, 'ms')}" + (
                            f", crnn/numpy {c / n:.2f}" if c else "")
                gflops = (cell_flops(cell, config) / (c * 1e-3) / 1e9
                          if c else None)
                rows.append(make_row(
                    f"{cell.upper()} train", cell, config, threads, c, t,
                    "PyTorch", "ms", TRAIN_TARGETS[cell][threads][index]
                    if threads in TRAIN_TARGETS[cell] else None,
                    spreads=(c_spread, t_spread), waits=(c_wait, t_wait),
                    slowdowns=(c_slow, t_slow), note=note, gflops=gflops))
    if "lstm" in args.cells:
        for index, config in configs:
            for threads in args.thread_counts:
                c, c_spread, c_wait, c_slow = op_stats(
                    by_key, "lstm", config, threads, "crnn", "forward")
                t, t_spread, t_wait, t_slow = op_stats(
                    by_key, "lstm", config, threads, "torch", "forward")
                gflops = (cell_flops("lstm", config, "forward") / (c * 1e-3)
                          / 1e9 if c else None)
                rows.append(make_row(
                    "LSTM forward", "lstm", config, threads, c, t, "PyTorch",
                    "ms", FORWARD_TARGET, spreads=(c_spread, t_spread),
                    waits=(c_wait, t_wait), slowdowns=(c_slow, t_slow),
                    gflops=gflops))
        # Efficiency: crnn's training GFLOP/s against sgemm's, same process.
        for index, config in configs:
            if index not in LARGE_CONFIGS:
                continue
            T, B, D, H, K = config
            for threads in args.thread_counts:
                c, c_spread, c_wait, c_slow = op_stats(
                    by_key, "lstm", config, threads, "crnn", "train")
                sgemm = [max(r["sgemm_gflops"].values()) for r in
                         by_key.get(("lstm", config, threads, "crnn"), [])
                         if r.get("sgemm_gflops")]
                gflops = (cell_flops("lstm", config) / (c * 1e-3) / 1e9
                          if c else None)
                rows.append(make_row(
                    "LSTM efficiency", "lstm", config, threads, gflops,
                    max(sgemm) if sgemm else None, "sgemm", "GFLOP/s",
                    EFFICIENCY_TARGET, at_least=True,
                    spreads=(c_spread, best_and_spread(sgemm)[1]),
                    waits=(c_wait, None), slowdowns=(c_slow, None),
                    gflops=gflops,
                    note=f"sgemm ({B}x{H})({H}x{4 * H})"))
    # Peak memory of the first training step, 1 thread (largest of rounds).
    for cell in args.cells:
        for index, config in configs:
            threads = 1 if 1 in args.thread_counts else args.thread_counts[0]
            values = {}
            for lib in ("crnn", "torch"):
                increases = [
                    r["memory"]["increase_mib"]
                    for r in by_key.get((cell, config, threads, lib), [])
                    if r.get("memory")]
                values[lib] = max(increases) if increases else None
            rows.append(make_row(
                f"{cell.upper()} train memory", cell, config, threads,
                values["crnn"], values["torch"], "PyTorch", "MiB",
                MEMORY_TARGET,
                note="peak RSS increase, first step"))
    if stream is not None:
        rows += stream_rows(stream, reference or {})
    return rows


def stream_rows(stream, reference):
    """Rows from bench_stream.py's JSON: one LSTM step, B=1, D=16, H=128.
    Its probes (one process measured crnn and the others) are compared
    with ``reference``, the run's fastest probes by thread count."""
    config_note = "B=1, D=16, H=128, state carried"
    if "error" in stream:
        return [make_row("LSTM stream step", "lstm", None, 1, None, None,
                         "LSTMCell", "us", None, note=stream["error"])]
    medians = stream.get("medians_seconds", {})
    aims = stream.get("aims", {"torch": 5.0, "ort": 3.0})

    def stats(key):
        best, spread = best_and_spread(medians.get(key, []))
        return (None if best is None else best * 1e6), spread

    c, c_spread = stats("lstm / crnn")
    t, t_spread = stats("lstm / torch")
    o, o_spread = stats("lstm / ort")
    ob, ob_spread = stats("lstm / ort bound")
    ort_options = [(v, s, n) for v, s, n in
                   ((o, o_spread, "session.run"), (ob, ob_spread, "I/O binding"))
                   if v is not None]
    ort_best = min(ort_options, default=(None, None, ""))
    wait = (stream.get("cpu_wait"), None)     # one process for all
    slowdowns = (probe_slowdown(dict(stream, threads=1), reference), None)
    return [
        make_row("LSTM stream step", "lstm", None, 1, c, t, "LSTMCell", "us",
                 1 / aims["torch"], spreads=(c_spread, t_spread), waits=wait,
                 slowdowns=slowdowns, note=config_note),
        make_row("LSTM stream step", "lstm", None, 1, c, ort_best[0], "ORT",
                 "us", 1 / aims["ort"], spreads=(c_spread, ort_best[1]),
                 waits=wait, slowdowns=slowdowns,
                 note=f"ORT's faster way ({ort_best[2]})"
                 if ort_best[2] else "onnxruntime not measured"),
    ]


def rows_from_json(data):
    """Rebuild a run's rows from its raw worker reports (and stream data)."""
    reports = data.get("reports") or []
    configs = {tuple(r["config"]) for r in reports}
    args = argparse.Namespace(
        config_indices=[i for i, c in enumerate(CONFIGS) if c in configs],
        thread_counts=sorted({r["threads"] for r in reports}),
        cells=[c for c in CELLS if any(r["cell"] == c for r in reports)])
    by_key, _ = collect(reports)
    return build_rows(by_key, data.get("stream"), args,
                      probe_reference(reports))


def sweep_points(by_key):
    """The plot's data: {"batch"|"hidden": [{x, crnn_ms, torch_ms}]}."""
    points = {"batch": [], "hidden": []}
    for axis, values, make in (("batch", SWEEP_BATCHES, sweep_batch_config),
                               ("hidden", SWEEP_HIDDEN, sweep_hidden_config)):
        for value in values:
            config = make(value)
            crnn_ms = op_stats(by_key, "lstm", config, 1, "crnn", "train")[0]
            torch_ms = op_stats(by_key, "lstm", config, 1, "torch", "train")[0]
            if crnn_ms is None and torch_ms is None:
                continue
            points[axis].append({"x": value, "config": list(config),
                                 "crnn_ms": crnn_ms, "torch_ms": torch_ms})
    return points


# ---------------------------------------------------------------------------
# The table (text for the terminal, Markdown for BENCHMARKS.md)
# ---------------------------------------------------------------------------

def format_value(value, unit):
    if value is None:
        return "-"
    if unit == "ms":
        text = (f"{value:.3f}" if value < 1 else f"{value:.2f}"
                if value < 10 else f"{value:.1f}")
    elif unit == "us":
        text = f"{value:.2f}" if value < 100 else f"{value:.0f}"
    elif unit == "MiB":
        text = f"{value:.2f}" if value < 10 else f"{value:.1f}"
    else:
        text = f"{value:.0f}" if value >= 100 else f"{value:.1f}"
    return f"{text} {'µs' if unit == 'us' else unit}"


def format_target(row):
    if row["target"] is None:
        return "-"
    return ("≥ " if row["at_least"] else "≤ ") + f"{row['target']:.2f}"


def row_cells(row):
    config = ("-" if row["config"] is None
              else "(" + ",".join(map(str, row["config"])) + ")")
    ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
    if (row["ratio"] is not None and row["target"] is not None
            and ratio == f"{row['target']:.2f}"):
        ratio = f"{row['ratio']:.3f}"     # which side of the target it is
    gflops = "-" if row["gflops"] is None else f"{row['gflops']:.1f}"
    met = {None: "-", True: "met", False: "MISSED"}[row["met"]]
    if row["met"] is not None and is_noisy(row):
        met += " (noisy)"
    spread = "-" if row["spread"] is None else f"{row['spread']:.2f}"
    wait = "/".join("-" if w is None else f"{100 * w:.0f}" for w in
                    (row.get("crnn_wait", row["cpu_wait"]),
                     row.get("other_wait")))
    wait = {"-/-": "-"}.get(wait, wait.removesuffix("/-"))
    probe = "/".join("-" if p is None else f"{p:.2f}" for p in
                     (row.get("crnn_slowdown"), row.get("other_slowdown")))
    probe = {"-/-": "-"}.get(probe, probe.removesuffix("/-"))
    return [row["what"], config, str(row["threads"]),
            format_value(row["crnn"], row["unit"]), row["vs"],
            format_value(row["other"], row["unit"]), ratio, gflops,
            format_target(row), met, spread, wait, probe, row["note"]]


TABLE_HEADER = ["what", "config (T,B,D,H,K)", "thr", "crnn", "vs",
                "other", "crnn/other", "crnn GFLOP/s", "target", "result",
                "spread", "wait% crnn/other", "probe crnn/other", "note"]


def table_lines(rows, markdown=False):
    cells = [row_cells(row) for row in rows]
    if markdown:
        lines = ["| " + " | ".join(TABLE_HEADER) + " |",
                 "|" + "|".join("---" for _ in TABLE_HEADER) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return lines
    widths = [max(len(line[i]) for line in cells + [TABLE_HEADER])
              for i in range(len(TABLE_HEADER))]
    numeric = {2, 3, 5, 6, 7, 10, 11, 12}

    def line(values):
        return "  ".join(v.rjust(w) if i in numeric else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths)))
    lines = [line(TABLE_HEADER).rstrip(), "-" * (sum(widths) + 2 * len(widths))]
    lines += [line(c).rstrip() for c in cells]
    return lines


NOISY_WAIT = 0.05
PROBE_SLOW = 1.2      # a child's probe this much slower: the machine was slow


def is_noisy(row):
    """Other work kept a task waiting for a CPU > 5 % of the row's time, or
    either library's child ran while the machine was slow.

    The wait is judged by the other library's child where there is one:
    crnn's own child can make tasks wait by itself (more runnable threads
    than cores, e.g. its thread team beside OpenBLAS's), which is crnn's
    doing, not noise; the other library's child, run in the same
    interleaved rounds, says whether the machine was busy.  The probe
    (machine_probe) runs no library code, so a slow probe in either child
    is the machine's state.
    """
    wait = row.get("other_wait")
    if wait is None:
        wait = row.get("crnn_wait", row["cpu_wait"])
    slowdowns = [row.get(key) for key in ("crnn_slowdown", "other_slowdown")]
    return ((wait is not None and wait > NOISY_WAIT)
            or any(s is not None and s > PROBE_SLOW for s in slowdowns))


def target_summary(rows):
    judged = [row for row in rows if row["met"] is not None]
    missed = [row for row in judged if not row["met"]]
    noisy = [row for row in judged if is_noisy(row)]
    return (f"{len(judged) - len(missed)} of {len(judged)} targets met"
            + (f" ({len(noisy)} of the {len(judged)} rows noisy: wait% "
               f"above {100 * NOISY_WAIT:.0f} or probe above {PROBE_SLOW:g})"
               if noisy else "")
            + (f"; missed: " + "; ".join(
                f"{row['what']} {tuple(row['config']) if row['config'] else ''}"
                f" {row['threads']} thr ({row['ratio']:.2f}, target "
                f"{format_target(row)})".replace("  ", " ")
                for row in missed) if missed else ""))


LEGEND = (
    "crnn/other: crnn's time (memory) divided by the other's, below 1 crnn "
    "is better; efficiency rows: crnn's GFLOP/s divided by sgemm's.\n"
    "crnn GFLOP/s: recurrent-cell FLOPs only, 2*T*B*G*H*(D+H) per forward "
    "pass, 3x that per training step (G = 4 LSTM, 3 GRU, 1 RNN).\n"
    "memory: peak RSS increase (VmHWM after the first training step minus "
    "VmRSS before it, high-water mark reset), MiB, in the library's own "
    "child process.\n"
    "spread: largest max/min of one library's round medians.\n"
    "wait% crnn/other: share of the time some task waited for a CPU (Linux "
    "PSI) during crnn's and the other library's measurements shown (one "
    "figure: one process measured both). Above a few % in the other's "
    "child, other work was running and the row is not to be trusted: its "
    "result says \"(noisy)\". A high crnn figure beside a low other figure "
    "from the same interleaved rounds is crnn's own doing: more runnable "
    "threads than cores in its process.\n"
    "probe crnn/other: in each child, before and after its timings, a fixed "
    "piece of numpy work (np.sin, no BLAS) on as many threads as the row "
    "has; the slower of the two against the fastest any child of the run "
    f"measured at that thread count. Above {PROBE_SLOW:g} the machine "
    "itself ran slow during that child (on the project's virtual machine "
    "both cores at times run at one half to two thirds of their speed) and "
    "the row's result says \"(noisy)\".")


def describe_worker(report):
    cores = ", ".join(f"{name} {info['core']} {info['threads']} thr"
                      for name, info in report["openblas"].items()
                      if isinstance(info, dict))
    text = (f"worker {report['lib']:<5} threads={report['threads']}: "
            f"{report['lib']} {report.get('version')}; OpenBLAS {cores}")
    if report["lib"] == "torch":
        text += f"; torch threads {report.get('torch_threads')}"
    if report.get("crnn_threads") is not None:
        text += f"; crnn.get_num_threads() {report['crnn_threads']}"
    return text


def environment():
    info = openblas_info()
    scipy_info = info.get("scipy")
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": package_version("scipy"),
        "torch": package_version("torch"),
        "onnxruntime": package_version("onnxruntime"),
        "crnn": package_version("crnn"),
        "git": git_state(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE"),
        "openblas": info,
        "openblas_core": (scipy_info["core"] if isinstance(scipy_info, dict)
                          else None),
    }


def git_state():
    """The checkout's commit, and whether src/ has uncommitted changes."""
    root = os.path.dirname(HERE)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "src"],
                                 cwd=root, capture_output=True, text=True,
                                 timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not commit:
        return None
    return commit + (" + uncommitted changes in src/" if changed else "")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def print_header(args, env):
    print("bench_train: crnn LSTM / RNN / GRU vs PyTorch, float32"
          + ("  (--quick: short measurements, one round)" if args.quick
             else ""))
    print(f"python {env['python']}  numpy {env['numpy']}  "
          f"scipy {env['scipy'] or '-'}  "
          f"torch {env['torch'] or 'not installed'}  "
          f"onnxruntime {env['onnxruntime'] or 'not installed'}  "
          f"crnn {env['crnn'] or 'not installed'}"
          + (f" (checkout {env['git']})" if env["git"] else ""))
    print(f"cpu: {env['cpu_model']}, os.cpu_count() = {env['cpu_count']}")
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        print(f"{name} = {env[name] or '(unset)'}")
    for lib, info in env["openblas"].items():
        if isinstance(info, dict):
            print(f"{lib}'s OpenBLAS: core {info['core']}  ({info['config']})"
                  + ("  <- crnn's BLAS" if lib == "scipy" else ""))
        else:
            print(f"{lib}'s OpenBLAS: {info}")
    load = other_cpu_load()
    env["cpu_busy_before"] = load
    if load is not None:
        print(f"CPU busy before the run (other processes): {load:.0%}"
              + ("  WARNING: the machine is not idle, timings will suffer"
                 if load > 0.1 else ""))
    print(f"each time: best of {args.rounds} interleaved round(s) of "
          f"medians over ~{args.target:g} s of calls, one process each")
    print(flush=True)


def run_parent(args):
    args.started = time.perf_counter()
    wait_idle_asked = args.wait_idle
    env = environment()
    print_header(args, env)
    # the probe's time on this machine now (each child's later ones join in)
    args.probe_reference = {threads: machine_probe(threads)
                            for threads in args.thread_counts}
    if "torch" in args.libs and package_version("torch") is None:
        print("torch is not installed: its columns are skipped.\n")
        args.libs.remove("torch")
    jobs = plan_jobs(args)
    broken = set()
    reports = []
    start = time.perf_counter()
    wait_before = cpu_wait_microseconds()
    # Interleave: for each job the rounds run the libraries one after
    # another, so a slow spell of the machine hits all of them.
    for number, ((cell, config, threads), job) in enumerate(jobs.items()):
        group_start = time.perf_counter()
        for _ in range(args.rounds):
            for lib in job["libs"]:
                if lib in broken:
                    continue
                report = measure_when_quiet(lib, cell, config, threads, job,
                                            args)
                reports.append(report)
                if report.get("import_failed"):
                    broken.add(lib)        # it will not import next time
        print(f"  [{number + 1}/{len(jobs)}] {cell} {config} "
              f"threads={threads}: {time.perf_counter() - group_start:.1f} s",
              file=sys.stderr, flush=True)
    stream = None
    if args.stream:
        stream_start = time.perf_counter()
        stream = run_stream(args)
        print(f"  bench_stream.py: {time.perf_counter() - stream_start:.1f} s",
              file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    wait_after = cpu_wait_microseconds()
    print(f"  total {elapsed:.0f} s", file=sys.stderr, flush=True)

    by_key, errors = collect(reports)
    rows = build_rows(by_key, stream, args, probe_reference(reports))
    for line in table_lines(rows):
        print(line)
    print("\n" + target_summary(rows))
    print("\n" + LEGEND)
    seen = set()
    for report in reports:
        key = (report["lib"], report["threads"])
        if "openblas" in report and key not in seen:
            seen.add(key)
            print(describe_worker(report))
    if stream is not None and "openblas" in stream:
        core = stream["openblas"].get("scipy", {})
        if isinstance(core, dict):
            print(f"bench_stream.py: scipy's OpenBLAS core {core.get('core')}")
    builds = sorted({r["crnn_build"] for r in reports if r.get("crnn_build")})
    if builds:
        print("crnn's compiled extensions as measured, last written (UTC): "
              + ", ".join(builds)
              + ("  WARNING: crnn was rebuilt during the run" if len(builds) > 1
                 else ""))
    if errors:
        print("\nerrors:")
        for error in errors:
            print("  " + error)
    print(f"\nrun time {elapsed:.0f} s" + (
        "" if wait_before is None or wait_after is None else
        f"; some task waited for a CPU "
        f"{(wait_after - wait_before) / 1e6 / elapsed:.0%} of it"))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({
                "environment": env,
                "quick": args.quick,
                "target_seconds": args.target,
                "rounds": args.rounds,
                "wait_idle": wait_idle_asked,
                "wait_budget_used_up": wait_idle_asked > 0 and args.wait_idle == 0,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "run_seconds": elapsed,
                "cpu_wait": (None if wait_before is None or wait_after is None
                             else (wait_after - wait_before) / 1e6 / elapsed),
                "command": " ".join([os.path.relpath(sys.argv[0])]
                                    + sys.argv[1:]),
                "crnn_builds": builds,
                "rows": rows,
                "sweep": sweep_points(by_key),
                "stream": stream,
                "reports": reports,
                "errors": errors,
            }, handle, indent=1)
        print(f"wrote {args.json}")
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
    parser.add_argument("--cells", default=",".join(CELLS),
                        help="subset of lstm,rnn,gru (default all)")
    parser.add_argument("--configs", default=None,
                        help="comma-separated indices into CONFIGS "
                             f"(0-{len(CONFIGS) - 1}); default all")
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--libs", default=",".join(LIBRARIES),
                        help="subset of crnn,torch,numpy (numpy: RNN only)")
    parser.add_argument("--quick", action="store_true",
                        help="short measurements, one round, fewer sweep "
                             "points, a short bench_stream.py: a smoke run")
    parser.add_argument("--target", type=float, default=None,
                        help="seconds per measurement (default 1.0, "
                             "0.15 with --quick)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds, best median kept "
                             "(default 2, 1 with --quick)")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false",
                        help="skip the batch-size and hidden-size sweeps "
                             "(the plot's data)")
    parser.add_argument("--no-stream", dest="stream", action="store_false",
                        help="skip the streaming step (bench_stream.py)")
    parser.add_argument("--wait-idle", type=float, default=0,
                        metavar="SECONDS",
                        help="on a shared machine: before each child wait "
                             "up to SECONDS for the CPUs to be idle, and "
                             "rerun a child that other work disturbed")
    parser.add_argument("--wait-budget", type=float, default=1800,
                        metavar="SECONDS",
                        help="with --wait-idle: stop waiting and rerunning "
                             "once the run has taken this long (default "
                             "1800), so a machine that is never idle still "
                             "gets a table")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds before a worker is abandoned")
    parser.add_argument("--json", metavar="PATH",
                        help="also write the results to this JSON file "
                             "(report.py turns it into BENCHMARKS.md)")
    parser.add_argument("--selfcheck", action="store_true",
                        help="check the numpy reference's gradients, "
                             "then exit")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    parser.add_argument("--cell", choices=CELLS, help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--ops", default="train", help=argparse.SUPPRESS)
    parser.add_argument("--probe-fast", type=float, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--sgemm", action="store_true",
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
    args.cells = args.cells.split(",")
    if not set(args.cells) <= set(CELLS):
        parser.error(f"--cells must be a subset of {','.join(CELLS)}")
    args.libs = args.libs.split(",")
    if not set(args.libs) <= set(LIBRARIES):
        parser.error(f"--libs must be a subset of {','.join(LIBRARIES)}")
    if args.target is None:
        args.target = 0.15 if args.quick else 1.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 2
    if args.worker:
        args.threads_for_worker = args.thread_counts[0]
        args.shape = tuple(int(v) for v in args.shape.split(","))
        args.ops = args.ops.split(",")
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
