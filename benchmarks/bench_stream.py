"""Benchmark crnn's streaming step against torch's RNN cells and ONNX Runtime.

What is timed, float32, one thread everywhere, B=1, D=16, H=128:

* ``step``: one streaming step with the state carried to the next call.
  crnn: ``stream = model.stream(1)`` then ``stream.step(x, out=out)`` (x a
  (16,) float32 vector, out a preallocated (128,) array; no output layer, so
  the output is h) for ``crnn.LSTM``, ``crnn.RNN`` and ``crnn.GRU``;
  PyTorch: ``h, c = cell(x, (h, c))`` with ``torch.nn.LSTMCell`` /
  ``RNNCell`` / ``GRUCell`` under ``torch.no_grad()``; ONNX Runtime (LSTM
  only): an ONNX ``LSTM`` operator over a sequence of length 1 with inputs
  ``initial_h``/``initial_c`` and outputs ``Y_h``/``Y_c`` fed back as the next
  step's state, once through ``session.run`` (numpy in, numpy out) and once
  through I/O binding (preallocated OrtValues, ping-pong between two state
  buffers: ORT's least-overhead way).  crnn's ``to_onnx`` has no state inputs,
  so this graph is built with ``onnx.helper`` from the same weights.
* ``sequence``: the whole-sequence LSTM forward, T=100: ``model.forward(X)``
  with X (1, 100, 16); ``torch.nn.LSTM`` (batch_first) under no_grad; ONNX
  Runtime on crnn's own ``model.to_onnx(path, lengths=False)``.
* ``variants`` (crnn LSTM only, for the profile): ``step(x)`` allocating its
  result, a token id instead of a feature vector, the (1, 16) batch form, and
  the recurrent weights W0 moved to a 64-byte boundary or 16 bytes past one
  (numpy only aligns to 16 bytes, and OpenBLAS's sgemv is ~10 % slower on a
  W0 that is not 32-byte aligned: the header says where the model's W0 is).
  With ``--profile`` also two floors measured in C loops by a small Cython
  extension built in a temporary folder (needs Cython and a C compiler):
  the same step through crnn's C-level API (``crnn_lstm_step_f32`` etc.,
  no Python at all) and the BLAS calls alone (the two ``sgemv`` a step
  makes).  Python-level overhead = ``stream.step`` minus the C step; point-wise
  and bookkeeping = C step minus BLAS.

All libraries run in this one process at one thread (OPENBLAS_NUM_THREADS,
OMP_NUM_THREADS, MKL_NUM_THREADS are set to 1 before numpy is imported,
``torch.set_num_threads(1)``, ORT ``intra_op_num_threads=1``): with one thread
no library has a thread pool to spin.  Before timing, the script checks that
crnn, torch and ORT compute the same outputs from the same weights.

How: every candidate's loop of n calls is timed as one sample (n chosen so a
sample takes ~2 ms); a round takes ``--target`` seconds of samples of each
candidate, one candidate after another in a rotating order, and keeps the
median; ``--rounds`` rounds are interleaved and the table shows the best
(lowest) round median.  "spread" is the highest round median over the lowest,
per candidate: how noisy the machine was.  "wait" is the share of the run's
time some task waited for a CPU (Linux PSI): other work on the machine.  On a
busy machine ``--clock cpu`` times with this thread's CPU time
(``time.thread_time``) instead of wall time, leaving out the time the
process waited for a CPU (other work still costs some through the caches).

Usage, from the repository root, with crnn, torch, onnx and onnxruntime
installed (torch and ORT columns show "-" when missing)::

    python benchmarks/bench_stream.py
    python benchmarks/bench_stream.py --rounds 7 --target 0.5
    python benchmarks/bench_stream.py --profile       # + the C floors
    python benchmarks/bench_stream.py --clock cpu     # on a busy machine
    python benchmarks/bench_stream.py --json out.json
    python benchmarks/bench_stream.py --spin lstm --seconds 10   # for perf/callgrind

Run it both with OpenBLAS as the machine sets it and with OpenBLAS choosing
its own kernel::

    python benchmarks/bench_stream.py
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_stream.py

``--spin KIND`` only runs crnn stream steps (KIND lstm, rnn, gru; add
``--tokens`` for token ids) in a loop for ``--seconds``, for a profiler::

    perf record -e cpu-clock -g python benchmarks/bench_stream.py --spin lstm
    valgrind --tool=callgrind python benchmarks/bench_stream.py --spin lstm --steps 20000
"""

import os

for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_train import (cpu_wait_microseconds, openblas_info,  # noqa: E402
                       other_cpu_load, package_version)

import crnn  # noqa: E402

torch = onnx = ort = TensorProto = helper = numpy_helper = None


def import_others():
    """Import torch and ONNX Runtime (not for --spin: a profile of crnn alone)."""
    global torch, onnx, ort, TensorProto, helper, numpy_helper
    try:
        import torch
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    except ImportError:
        torch = None
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        onnx = ort = None


D, H, T = 16, 128, 100
KINDS = {"lstm": crnn.LSTM, "rnn": crnn.RNN, "gru": crnn.GRU}
AIMS = {"torch": 5.0, "ort": 3.0}     # the aims: crnn this many times faster
SAMPLE_SECONDS = 0.002
CLOCK = {"wall": time.perf_counter, "cpu": time.thread_time}
clock = CLOCK["wall"]


# ---------------------------------------------------------------- candidates
# A candidate is a function run(n) that makes n steps (or n forward calls).

def crnn_model(kind, seed=0):
    return KINDS[kind](D, H, output=None, seed=seed)


def realign(model, name, offset):
    """Benchmark-only: move parameter `name` of `model` to an address
    `offset` bytes past a 64-byte boundary (numpy only promises 16)."""
    array = model._params[name]
    raw = np.empty(array.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    moved = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    moved[...] = array
    model._params[name] = moved
    return model


def crnn_step(model, variant="floats"):
    stream = model.stream(1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(D).astype(np.float32)
    out = np.empty(H, np.float32)
    step = stream.step
    if variant == "floats":
        def run(n):
            for _ in range(n):
                step(x, out=out)
    elif variant == "floats, no out":
        def run(n):
            for _ in range(n):
                step(x)
    elif variant == "token":
        def run(n):
            for _ in range(n):
                step(3, out=out)
    elif variant == "batch (1, D)":
        xb, outb = x.reshape(1, D), out.reshape(1, H)

        def run(n):
            for _ in range(n):
                step(xb, out=outb)
    else:
        raise ValueError(variant)
    return run


def torch_cell(kind, model):
    """The torch cell holding `model`'s weights."""
    module, _ = model.to_torch()
    cell = {"lstm": torch.nn.LSTMCell, "rnn": torch.nn.RNNCell,
            "gru": torch.nn.GRUCell}[kind](D, H)
    with torch.no_grad():
        cell.weight_ih.copy_(module.weight_ih_l0)
        cell.weight_hh.copy_(module.weight_hh_l0)
        cell.bias_ih.copy_(module.bias_ih_l0)
        cell.bias_hh.copy_(module.bias_hh_l0)
    return cell.eval()


def torch_step(kind, model):
    cell = torch_cell(kind, model)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((1, D)).astype(np.float32))
    state = {"h": torch.zeros(1, H), "c": torch.zeros(1, H)}
    if kind == "lstm":
        def run(n):
            h, c = state["h"], state["c"]
            with torch.no_grad():
                for _ in range(n):
                    h, c = cell(x, (h, c))
            state["h"], state["c"] = h, c
    else:
        def run(n):
            h = state["h"]
            with torch.no_grad():
                for _ in range(n):
                    h = cell(x, h)
            state["h"] = h
    return run


def ort_options():
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def ort_step_session(model):
    """An ORT session of one LSTM step (a length-1 sequence) with the state
    as inputs initial_h, initial_c and outputs Y_h, Y_c, from `model`'s
    weights (torch's gate order i, f, g, o reordered to ONNX's i, o, f, c)."""
    module, _ = model.to_torch()
    order = np.concatenate([np.arange(k * H, (k + 1) * H) for k in (0, 3, 1, 2)])
    w = module.weight_ih_l0.detach().numpy()[order][None]
    r = module.weight_hh_l0.detach().numpy()[order][None]
    b = np.concatenate([module.bias_ih_l0.detach().numpy()[order],
                        module.bias_hh_l0.detach().numpy()[order]])[None]
    floats = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["X", "W", "R", "B", "", "initial_h", "initial_c"],
                          ["", "Y_h", "Y_c"], hidden_size=H)],
        "lstm_step",
        [helper.make_tensor_value_info("X", floats, [1, 1, D]),
         helper.make_tensor_value_info("initial_h", floats, [1, 1, H]),
         helper.make_tensor_value_info("initial_c", floats, [1, 1, H])],
        [helper.make_tensor_value_info("Y_h", floats, [1, 1, H]),
         helper.make_tensor_value_info("Y_c", floats, [1, 1, H])],
        initializer=[numpy_helper.from_array(w.astype(np.float32), "W"),
                     numpy_helper.from_array(r.astype(np.float32), "R"),
                     numpy_helper.from_array(b.astype(np.float32), "B")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    return ort.InferenceSession(proto.SerializeToString(), ort_options(),
                                providers=["CPUExecutionProvider"])


def ort_step(model):
    session = ort_step_session(model)
    x = np.random.default_rng(1).standard_normal((1, 1, D)).astype(np.float32)
    state = {"h": np.zeros((1, 1, H), np.float32), "c": np.zeros((1, 1, H), np.float32)}
    names = ["Y_h", "Y_c"]
    run_session = session.run

    def run(n):
        h, c = state["h"], state["c"]
        for _ in range(n):
            h, c = run_session(names, {"X": x, "initial_h": h, "initial_c": c})
        state["h"], state["c"] = h, c
    return run


def ort_step_bound(model):
    """ORT with I/O binding: two bindings swap two preallocated state buffers."""
    session = ort_step_session(model)
    x = np.random.default_rng(1).standard_normal((1, 1, D)).astype(np.float32)
    value = ort.OrtValue.ortvalue_from_numpy
    xv = value(x)
    buffers = [(value(np.zeros((1, 1, H), np.float32)),
                value(np.zeros((1, 1, H), np.float32))) for _ in range(2)]
    bindings = []
    for source, target in ((0, 1), (1, 0)):
        binding = session.io_binding()
        binding.bind_ortvalue_input("X", xv)
        binding.bind_ortvalue_input("initial_h", buffers[source][0])
        binding.bind_ortvalue_input("initial_c", buffers[source][1])
        binding.bind_ortvalue_output("Y_h", buffers[target][0])
        binding.bind_ortvalue_output("Y_c", buffers[target][1])
        bindings.append(binding)
    first, second = bindings
    run_bound = session.run_with_iobinding

    def run(n):          # n rounded up to even: the state ends in buffers[0]
        for _ in range((n + 1) // 2):
            run_bound(first)
            run_bound(second)
    run.buffers = buffers
    return run


def sequence_input():
    return np.random.default_rng(2).standard_normal((1, T, D)).astype(np.float32)


def crnn_sequence(model):
    X = sequence_input()
    forward = model.forward

    def run(n):
        for _ in range(n):
            forward(X)
    return run


def torch_sequence(model):
    module, _ = model.to_torch()
    module.eval()
    X = torch.from_numpy(sequence_input())

    def run(n):
        with torch.no_grad():
            for _ in range(n):
                module(X)
    return run


def ort_sequence_session(model, folder):
    path = os.path.join(folder, "lstm_sequence.onnx")
    model.to_onnx(path, lengths=False)
    return ort.InferenceSession(path, ort_options(), providers=["CPUExecutionProvider"])


def ort_sequence(model, folder):
    session = ort_sequence_session(model, folder)
    feed = {"X": sequence_input()}
    run_session = session.run

    def run(n):
        for _ in range(n):
            run_session(None, feed)
    return run


# ---------------------------------------------------------------- agreement

def check_agreement(folder):
    """Largest |difference| between crnn and the others on the same weights:
    steps (20 steps, state carried) and the whole sequence."""
    rng = np.random.default_rng(5)
    xs = rng.standard_normal((20, D)).astype(np.float32)
    report = {}
    for kind in KINDS:
        model = crnn_model(kind)
        stream = model.stream(1)
        ours = np.stack([stream.step(x).copy() for x in xs])
        # the stream against the model's own forward on the whole sequence
        report[f"{kind} stream vs crnn forward"] = float(
            np.abs(ours - model.forward(xs[None])[0]).max())
        if torch is not None:
            cell = torch_cell(kind, model)
            h = torch.zeros(1, H)
            c = torch.zeros(1, H)
            theirs = []
            with torch.no_grad():
                for x in xs:
                    if kind == "lstm":
                        h, c = cell(torch.from_numpy(x[None]), (h, c))
                    else:
                        h = cell(torch.from_numpy(x[None]), h)
                    theirs.append(h.numpy()[0].copy())
            report[f"{kind} stream vs torch cell"] = float(np.abs(ours - np.stack(theirs)).max())
        if kind == "lstm" and ort is not None:
            session = ort_step_session(model)
            h = np.zeros((1, 1, H), np.float32)
            c = np.zeros((1, 1, H), np.float32)
            theirs = []
            for x in xs:
                h, c = session.run(["Y_h", "Y_c"], {"X": x[None, None],
                                                    "initial_h": h, "initial_c": c})
                theirs.append(h[0, 0])
            report["lstm stream vs ORT step graph"] = float(np.abs(ours - np.stack(theirs)).max())
            # the I/O-binding variant carries the state the same way
            bound = ort_step_bound(model)
            bound(4)
            x = np.random.default_rng(1).standard_normal((1, 1, D)).astype(np.float32)
            h = np.zeros((1, 1, H), np.float32)
            c = np.zeros((1, 1, H), np.float32)
            for _ in range(4):
                h, c = session.run(["Y_h", "Y_c"], {"X": x, "initial_h": h, "initial_c": c})
            report["lstm ORT I/O binding vs ORT run"] = float(
                np.abs(bound.buffers[0][0].numpy() - h).max())
            seq = sequence_input()
            ours_seq = model.forward(seq)
            session = ort_sequence_session(model, folder)
            report["lstm forward vs ORT (to_onnx)"] = float(
                np.abs(ours_seq - session.run(None, {"X": seq})[0]).max())
        if kind == "lstm" and torch is not None:
            module, _ = model.to_torch()
            seq = sequence_input()
            with torch.no_grad():
                theirs = module(torch.from_numpy(seq))[0].numpy()
            report["lstm forward vs torch nn.LSTM"] = float(
                np.abs(model.forward(seq) - theirs).max())
    return report


# ---------------------------------------------------------------- C floors

FLOOR_PYX = textwrap.dedent('''
    # cython: language_level=3, boundscheck=False, wraparound=False
    """C loops for bench_stream.py --profile: crnn's C-level step and the
    BLAS calls alone, n times without Python in between."""
    from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_THREAD_CPUTIME_ID
    from scipy.linalg.cython_blas cimport sgemv
    from crnn.api cimport *

    cdef bint use_cpu_time = False

    def set_clock(bint cpu):
        global use_cpu_time
        use_cpu_time = cpu

    cdef double now() noexcept nogil:
        cdef timespec ts
        clock_gettime(CLOCK_THREAD_CPUTIME_ID if use_cpu_time else CLOCK_MONOTONIC, &ts)
        return ts.tv_sec + ts.tv_nsec * 1e-9

    def step_loop(str kind, long n, float[::1] x, float[:, ::1] U,
                  float[:, ::1] W, float[::1] b, float[::1] bn,
                  float[::1] h, float[::1] c, float[::1] work):
        """Seconds per call of crnn_<kind>_step_f32, state carried."""
        cdef crnn_sizes sizes
        sizes.steps = 1
        sizes.batch = 1
        sizes.inputs = U.shape[1]
        sizes.hidden = W.shape[1]
        cdef long i
        cdef int status = 0
        cdef double start, stop
        cdef int which = {"lstm": 0, "rnn": 1, "gru": 2}[kind]
        with nogil:
            start = now()
            for i in range(n):
                if which == 0:
                    status |= crnn_lstm_step_f32(&sizes, &x[0], &U[0, 0], &W[0, 0],
                                                 &b[0], &h[0], &c[0], &work[0])
                elif which == 1:
                    status |= crnn_rnn_tanh_step_f32(&sizes, &x[0], &U[0, 0], &W[0, 0],
                                                     &b[0], &h[0], &work[0])
                else:
                    status |= crnn_gru_step_f32(&sizes, &x[0], &U[0, 0], &W[0, 0],
                                                &b[0], &bn[0], &h[0], &work[0])
            stop = now()
        if status:
            raise RuntimeError(f"crnn step failed: status {status}")
        return (stop - start) / n

    def workspace(str kind, int inputs, int hidden):
        cdef crnn_sizes sizes
        sizes.steps = 1
        sizes.batch = 1
        sizes.inputs = inputs
        sizes.hidden = hidden
        return crnn_step_workspace_size({"lstm": CRNN_LSTM, "rnn": CRNN_RNN_TANH,
                                         "gru": CRNN_GRU}[kind], &sizes)

    def gemv_loop(long n, float[::1] x, float[:, ::1] U, float[:, ::1] W,
                  float[::1] h, float[::1] z, bint input_gemv=True):
        """Seconds per pair of sgemv calls as a step makes them: z = U x + z
        (if input_gemv) and z += W h, row-major (GH x D) and (GH x H)."""
        cdef char t = b'T'
        cdef int GH = W.shape[0], Dn = U.shape[1], Hn = W.shape[1], one = 1
        cdef float alpha = 1, beta = 1
        cdef long i
        cdef double start, stop
        with nogil:
            start = now()
            for i in range(n):
                if input_gemv:
                    sgemv(&t, &Dn, &GH, &alpha, &U[0, 0], &Dn, &x[0], &one, &beta, &z[0], &one)
                sgemv(&t, &Hn, &GH, &alpha, &W[0, 0], &Hn, &h[0], &one, &beta, &z[0], &one)
            stop = now()
        return (stop - start) / n

    def gemv_part(long n, str part, float[:, ::1] A, float[::1] x, float[::1] y):
        """Seconds per y += A x, A row-major (m x k), one way:
        'T': sgemv('T') on A as crnn calls it (A is (k x m) column-major);
        'N': sgemv('N') on a transposed copy (pass A.T copied, (k x m));
        'C': a plain C loop, one dot product per row (-O3 -march=native)."""
        cdef char t = b'T', nn = b'N'
        cdef int one = 1, m, k, i, j
        cdef float alpha = 1, beta = 1, acc
        cdef long r
        cdef double start, stop
        cdef int which = {"T": 0, "N": 1, "C": 2}[part]
        with nogil:
            start = now()
            for r in range(n):
                if which == 0:
                    m = A.shape[0]
                    k = A.shape[1]
                    sgemv(&t, &k, &m, &alpha, &A[0, 0], &k, &x[0], &one, &beta, &y[0], &one)
                elif which == 1:
                    k = A.shape[0]
                    m = A.shape[1]
                    sgemv(&nn, &m, &k, &alpha, &A[0, 0], &m, &x[0], &one, &beta, &y[0], &one)
                else:
                    m = A.shape[0]
                    k = A.shape[1]
                    for i in range(m):
                        acc = y[i]
                        for j in range(k):
                            acc = acc + A[i, j] * x[j]
                        y[i] = acc
            stop = now()
        return (stop - start) / n
''')


def build_floor(folder):
    """Build the C-loop helper; returns the module or the reason it failed."""
    try:
        import Cython  # noqa: F401
    except ImportError:
        return "Cython is not installed"
    with open(os.path.join(folder, "bench_stream_floor.pyx"), "w") as handle:
        handle.write(FLOOR_PYX)
    with open(os.path.join(folder, "setup.py"), "w") as handle:
        handle.write(textwrap.dedent(f'''
            import crnn
            from Cython.Build import cythonize
            from setuptools import Extension, setup
            setup(ext_modules=cythonize(
                [Extension("bench_stream_floor", ["bench_stream_floor.pyx"],
                           include_dirs=[crnn.get_include()],
                           extra_compile_args=["-O3", "-march=native",
                                               "-ffast-math"])],
                include_path=[crnn.get_include()], quiet=True))
        '''))
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"],
                          cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        return "the build failed: " + (done.stderr.strip().splitlines() or ["?"])[-1]
    sys.path.insert(0, folder)
    import bench_stream_floor
    bench_stream_floor.set_clock(clock is CLOCK["cpu"])
    return bench_stream_floor


def floor_candidates(floor, kind):
    """run(n) functions for the C step of `kind` and its BLAS calls alone."""
    model = crnn_model(kind)
    p = model.params
    U, W, b = p["U0"], p["W0"], p["b0"]
    bn = p.get("bn0", np.zeros(H, np.float32))
    x = np.random.default_rng(1).standard_normal(D).astype(np.float32)
    h = np.zeros(H, np.float32)
    c = np.zeros(H, np.float32)
    work = np.zeros(floor.workspace(kind, D, H), np.float32)
    z = np.zeros(W.shape[0], np.float32)

    def c_step(n):
        c_step.per_call = floor.step_loop(kind, n, x, U, W, b, bn, h, c, work)

    def blas(n):
        z[:] = 0
        blas.per_call = floor.gemv_loop(n, x, U, W, h * 0 + 0.1, z, True)
    return c_step, blas


def gemv_candidates(floor):
    """run(n) functions for the LSTM step's two products done three ways."""
    model = crnn_model("lstm")
    U, W = model.params["U0"], model.params["W0"]
    hv = np.full(H, 0.1, np.float32)
    xv = np.random.default_rng(1).standard_normal(D).astype(np.float32)
    y = np.zeros(W.shape[0], np.float32)
    runs = {}
    for product, A, v in (("input U (512x16)", U, xv), ("recurrent W (512x128)", W, hv)):
        for part in ("T", "N", "C"):
            operand = np.ascontiguousarray(A.T) if part == "N" else A

            def run(n, operand=operand, v=v, part=part):
                y[:] = 0
                run.per_call = floor.gemv_part(n, part, operand, v, y)
            runs[(product, part)] = run
    return runs


# ---------------------------------------------------------------- timing

def calibrate(run):
    """Calls per sample so that one sample takes about SAMPLE_SECONDS."""
    run(5)
    n = 1
    while True:
        start = clock()
        run(n)
        took = clock() - start
        if took >= SAMPLE_SECONDS / 4 or n >= 1 << 20:
            n = max(1, int(n * SAMPLE_SECONDS / max(took, 1e-9)))
            return n + n % 2          # even (the I/O-binding loop steps in pairs)
        n *= 4


def sample(run, n):
    """Seconds per call over one sample of n calls (a C loop reports its own)."""
    start = clock()
    run(n)
    took = (clock() - start) / n
    return getattr(run, "per_call", took)


def measure(candidates, rounds, target):
    """{name: [round medians]}: interleaved rounds, rotating order."""
    names = list(candidates)
    counts = {name: calibrate(candidates[name]) for name in names}
    medians = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            run, n = candidates[name], counts[name]
            samples = []
            deadline = time.perf_counter() + target
            while time.perf_counter() < deadline or len(samples) < 5:
                samples.append(sample(run, n))
            medians[name].append(statistics.median(samples))
    return medians


def best(values):
    return min(values) if values else None


def spread(values):
    return max(values) / min(values) if values else None


# ---------------------------------------------------------------- report

def us(seconds):
    return f"{'-':>8}" if seconds is None else f"{seconds * 1e6:8.2f}"


def ratio(a, b):
    return "-" if a is None or b is None else f"{b / a:6.2f}x"


def print_header(args):
    print("bench_stream: crnn streaming step vs torch cells vs ONNX Runtime, "
          "float32, 1 thread, B=1, D=16, H=128")
    print(f"python {platform.python_version()}  numpy {np.__version__}  "
          f"scipy {package_version('scipy') or '-'}  "
          f"torch {package_version('torch') or 'not installed'}  "
          f"onnxruntime {package_version('onnxruntime') or 'not installed'}  "
          f"crnn {package_version('crnn') or '?'}")
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        print(f"{name} = {os.environ.get(name, '(unset)')}")
    for lib, info in openblas_info().items():
        if isinstance(info, dict):
            print(f"{lib}'s OpenBLAS: core {info['core']}"
                  + ("  (crnn's BLAS)" if lib == "scipy" else ""))
        else:
            print(f"{lib}'s OpenBLAS: {info}")
    load = other_cpu_load(0.5)
    if load is not None:
        print(f"CPU busy before the run (other processes): {load:.0%}"
              + ("  WARNING: the machine is not idle, timings will suffer"
                 if load > 0.1 else ""))
    print(f"each number: best of {args.rounds} interleaved round medians, "
          f"~{args.target:g} s of ~{SAMPLE_SECONDS * 1e3:g} ms samples per "
          f"candidate per round; clock: "
          + ("wall (perf_counter)" if args.clock == "wall" else
             "this thread's CPU time (time.thread_time: time spent waiting "
             "for a CPU is not counted)"), flush=True)


W0_OFFSET = None


def run_benchmark(args):
    folder = tempfile.mkdtemp(prefix="bench_stream_")
    try:
        benchmark(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def benchmark(args, folder):
    global clock
    clock = CLOCK[args.clock]
    import_others()
    print_header(args)
    have_torch, have_ort = torch is not None, ort is not None
    agreement = check_agreement(folder)
    worst = max(agreement.values())
    print(f"outputs agree: largest |difference| {worst:.1e} "
          f"({'ok' if worst < 1e-4 else 'MISMATCH'}; "
          + ", ".join(f"{k} {v:.0e}" for k, v in agreement.items()) + ")")
    print(flush=True)

    global W0_OFFSET
    candidates = {}
    for kind in KINDS:
        model = crnn_model(kind)
        if kind == "lstm":
            W0_OFFSET = model.params["W0"].ctypes.data % 64
        candidates[(kind, "crnn")] = crnn_step(model)
        if have_torch:
            candidates[(kind, "torch")] = torch_step(kind, model)
        if kind == "lstm" and have_ort:
            candidates[(kind, "ort")] = ort_step(model)
            candidates[(kind, "ort bound")] = ort_step_bound(model)
    model = crnn_model("lstm")
    candidates[("sequence", "crnn")] = crnn_sequence(model)
    if have_torch:
        candidates[("sequence", "torch")] = torch_sequence(model)
    if have_ort:
        candidates[("sequence", "ort")] = ort_sequence(model, folder)
    for variant in ("floats, no out", "token", "batch (1, D)"):
        candidates[("variant", variant)] = crnn_step(model, variant)
    for offset in (0, 16):
        candidates[("variant", f"W0 at {offset} mod 64")] = crnn_step(
            realign(crnn_model("lstm"), "W0", offset))
    floor_note = None
    if args.profile:
        floor = build_floor(folder)
        if isinstance(floor, str):
            floor_note = f"C floors not measured: {floor}"
        else:
            for kind in KINDS:
                c_step, blas = floor_candidates(floor, kind)
                candidates[(f"{kind} floor", "C step")] = c_step
                candidates[(f"{kind} floor", "BLAS")] = blas
            for (product, part), run in gemv_candidates(floor).items():
                candidates[(f"gemv {product}", part)] = run

    # bench_train.py's machine probe before and after the measurements: the
    # table's probe column compares them with the run's fastest
    from bench_train import machine_probe
    probes = [machine_probe(1)]
    gc.collect()
    gc.disable()
    wait_before, started = cpu_wait_microseconds(), time.perf_counter()
    try:
        medians = measure(candidates, args.rounds, args.target)
    finally:
        gc.enable()
    probes.append(machine_probe(1))
    elapsed = time.perf_counter() - started
    wait_after = cpu_wait_microseconds()
    wait = (None if wait_before is None or wait_after is None
            else (wait_after - wait_before) / 1e6 / elapsed)

    def get(key):
        return best(medians.get(key, []))

    print("one streaming step, state carried (us per step; ratio = how many "
          "times faster crnn is; vs ORT: against the faster of ORT's two ways)")
    print(f"{'cell':6} {'crnn':>8} {'torch':>8} {'ORT run':>8} {'ORT bind':>8}"
          f" {'vs torch':>8} {'vs ORT':>8}   spread crnn/torch/ORT/bind")
    for kind in KINDS:
        c, t = get((kind, "crnn")), get((kind, "torch"))
        o, ob = get((kind, "ort")), get((kind, "ort bound"))
        fastest_ort = min([v for v in (o, ob) if v is not None], default=None)
        spreads = "/".join(
            "-" if (kind, lib) not in medians else f"{spread(medians[(kind, lib)]):.2f}"
            for lib in ("crnn", "torch", "ort", "ort bound"))
        print(f"{kind:6} {us(c)} {us(t)} {us(o)} {us(ob)} {ratio(c, t):>8} "
              f"{ratio(c, fastest_ort):>8}   {spreads}")
    print()
    c, t, o = get(("sequence", "crnn")), get(("sequence", "torch")), get(("sequence", "ort"))
    print(f"whole-sequence LSTM forward, T={T}, B=1, D={D}, H={H} (us per sequence)")
    print(f"{'':6} {'crnn':>8} {'torch':>8} {'ORT':>8} {'vs torch':>8} {'vs ORT':>8}"
          f"   spread crnn/torch/ORT")
    spreads = "/".join("-" if ("sequence", lib) not in medians
                       else f"{spread(medians[('sequence', lib)]):.2f}"
                       for lib in ("crnn", "torch", "ort"))
    print(f"{'lstm':6} {us(c)} {us(t)} {us(o)} {ratio(c, t):>8} {ratio(c, o):>8}"
          f"   {spreads}")
    print()
    lstm = get(("lstm", "crnn"))
    print("crnn LSTM step variants (us per step)")
    print(f"  {'step(x, out=out), x (16,) float32':44} {us(lstm)}   "
          f"(its W0 is at {W0_OFFSET} mod 64 bytes)")
    for variant in ("floats, no out", "token", "batch (1, D)",
                    "W0 at 0 mod 64", "W0 at 16 mod 64"):
        label = {"floats, no out": "step(x), allocating the result",
                 "token": "step(3, out=out), a token id",
                 "batch (1, D)": "step(x, out=out), x (1, 16), out (1, 128)",
                 "W0 at 0 mod 64": "step(x, out=out), W0 moved to 0 mod 64",
                 "W0 at 16 mod 64": "step(x, out=out), W0 moved to 16 mod 64",
                 }[variant]
        print(f"  {label:44} {us(get(('variant', variant)))}")
    if args.profile:
        if floor_note:
            print(f"  {floor_note}")
        else:
            print()
            print("where a crnn step's time goes (us per step; C loops without Python)")
            print(f"{'cell':6} {'step()':>8} {'C step':>8} {'BLAS':>8}   "
                  f"{'Python layer':>12} {'point-wise+':>12} {'BLAS':>6}")
            for kind in KINDS:
                s = get((kind, "crnn"))
                cs = get((f"{kind} floor", "C step"))
                bl = get((f"{kind} floor", "BLAS"))
                print(f"{kind:6} {us(s)} {us(cs)} {us(bl)}   "
                      f"{(s - cs) / s:12.0%} {(cs - bl) / s:12.0%} {bl / s:6.0%}")
            print()
            print("the LSTM step's two products, y += A x (us per product): sgemv('T') "
                  "as crnn calls it, sgemv('N') on a transposed copy, a plain C loop "
                  "(-O3 -march=native)")
            for product in ("input U (512x16)", "recurrent W (512x128)"):
                print(f"  {product:22} " + "  ".join(
                    f"{part} {us(get((f'gemv {product}', part)))}" for part in "TNC"))
    print()
    lstm_torch, lstm_ort = get(("lstm", "torch")), get(("lstm", "ort"))
    lstm_bound = get(("lstm", "ort bound"))
    print("the issue's aims for one LSTM step:")
    if lstm_torch is not None:
        met = lstm_torch / lstm >= AIMS["torch"]
        print(f"  >= {AIMS['torch']:g}x faster than torch's LSTMCell: "
              f"{lstm_torch / lstm:.2f}x  ({'met' if met else 'NOT met'})")
    for label, value in (("ORT (session.run)", lstm_ort), ("ORT (I/O binding)", lstm_bound)):
        if value is not None:
            print(f"  >= {AIMS['ort']:g}x faster than {label}: {value / lstm:.2f}x  "
                  f"({'met' if value / lstm >= AIMS['ort'] else 'NOT met'})")
    every = [spread(v) for v in medians.values() if v]
    print()
    print(f"noise: round medians of one candidate were {min(every):.2f}-"
          f"{max(every):.2f}x apart (median {statistics.median(every):.2f}x); "
          + (f"some task waited for a CPU {wait:.0%} of the run's {elapsed:.0f} s"
             if wait is not None else f"run took {elapsed:.0f} s"))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"medians_seconds": {" / ".join(k): v for k, v in medians.items()},
                       "agreement": agreement, "cpu_wait": wait,
                       "probe_ms": probes,
                       "aims": AIMS, "rounds": args.rounds,
                       "target_seconds": args.target,
                       "openblas": openblas_info(),
                       "env": {k: os.environ.get(k) for k in
                               ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}},
                      handle, indent=1)


def spin(args):
    """Only crnn stream steps, for an external profiler."""
    model = crnn_model(args.spin)
    run = crnn_step(model, "token" if args.tokens else "floats")
    if args.steps:
        run(args.steps)
        return
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        run(10_000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds; the table shows the best round median")
    parser.add_argument("--target", type=float, default=0.3,
                        help="seconds of samples per candidate per round")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                        help="wall time (default) or this thread's CPU time, which "
                             "leaves out time other work on a busy machine took")
    parser.add_argument("--profile", action="store_true",
                        help="also build and time the C floors (needs Cython, a compiler)")
    parser.add_argument("--json", help="also write the medians to this file")
    parser.add_argument("--spin", choices=sorted(KINDS),
                        help="only run crnn stream steps of this cell, for a profiler")
    parser.add_argument("--tokens", action="store_true", help="--spin with token ids")
    parser.add_argument("--seconds", type=float, default=5.0, help="--spin duration")
    parser.add_argument("--steps", type=int, default=0,
                        help="--spin exactly this many steps instead")
    args = parser.parse_args()
    if args.spin:
        spin(args)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
