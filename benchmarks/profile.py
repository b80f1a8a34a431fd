"""Where a crnn training step (or forward pass) spends its time, by part.

Runs one configuration in a child process under ``perf record`` (Linux
perf, sampling every thread) and sorts the samples by the library they fell
in, which maps one-to-one onto crnn's parts:

    recurrent products   crnn's packed GEMM (_blas: _packed_gemm.h)
    BLAS GEMMs           SciPy's OpenBLAS: input projection, weight
                         gradients, output layer
    point-wise cells     _cells (the fused gate kernels)
    loss                 _loss + libm (softmax, exp)
    Python and numpy     the interpreter and numpy: validation, layout, glue
    copies               libc (memcpy/memset), _network, _lane, _step (the engine's loops)
    kernel               the operating system (page faults, scheduling)

Usage, from the repository root with crnn installed::

    python benchmarks/profile.py                       # LSTM, the four configs
    python benchmarks/profile.py --cell gru --op forward --configs 0,3
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/profile.py

Threads: one unless ``--threads`` (OPENBLAS_NUM_THREADS and CRNN_NUM_THREADS
are set for the child).  Needs ``perf``; prints why when it cannot run.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

CONFIGS = [(100, 64, 64, 256, 64), (100, 32, 32, 128, 32), (50, 1, 16, 32, 16),
           (200, 16, 128, 512, 128)]

PARTS = [("recurrent products", ("_blas.",)),
         ("BLAS GEMMs", ("openblas",)),
         ("point-wise cells", ("_cells.",)),
         ("loss", ("_loss.", "libm")),
         ("Python and numpy", ("libpython", "python3", "_multiarray", "_umath")),
         ("copies", ("libc.", "_network.", "_lane.", "_step.")),
         ("kernel", ("[kernel",))]

CHILD = """
import sys, time, numpy as np, crnn
cell, op, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
T, B, D, H, K = map(int, sys.argv[4].split(","))
rng = np.random.default_rng(0)
X = rng.standard_normal((B, T, D)).astype(np.float32)
y = rng.integers(0, K, (B, T))
model = getattr(crnn, cell.upper())(D, H, K, dtype="float32", seed=0)
step = (lambda: model.loss_and_grad(X, y)) if op == "train" else (lambda: model.forward(X))
for _ in range(3):
    step()
print("READY", flush=True)
time.sleep(0.2)                      # perf attaches meanwhile
end, calls = time.perf_counter() + seconds, 0
start = time.perf_counter()
while time.perf_counter() < end:
    step()
    calls += 1
print("CALL_MS", (time.perf_counter() - start) / calls * 1e3, flush=True)
"""


def part_of(dso):
    for name, keys in PARTS:
        if any(key in dso for key in keys):
            return name
    return "other"


def profile(cell, op, config, seconds, threads):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               CRNN_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as folder:
        data = os.path.join(folder, "perf.data")
        # the child warms up, says READY, then loops for `seconds`: perf
        # attaches to it only then, so start-up and imports are not counted
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, cell, op, str(seconds),
             ",".join(map(str, config))],
            env=env, stdout=subprocess.PIPE, text=True)
        if child.stdout.readline().strip() != "READY":
            child.kill()
            raise RuntimeError("the child did not start")
        perf = subprocess.run(
            ["perf", "record", "-q", "-F", "2000", "-o", data, "-p", str(child.pid),
             "--", "sleep", str(max(seconds - 0.5, 0.5))],
            capture_output=True, text=True)
        out = child.communicate()[0]
        if perf.returncode != 0 or child.returncode != 0:
            raise RuntimeError(perf.stderr.strip()[-500:] or "the child failed")
        call_ms = float(re.search(r"CALL_MS (\S+)", out).group(1))
        report = subprocess.run(
            ["perf", "report", "-i", data, "--stdio", "--sort", "dso"],
            capture_output=True, text=True, check=True).stdout
    shares = {}
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S.*)$", line)
        if match:
            part = part_of(match.group(2))
            shares[part] = shares.get(part, 0.0) + float(match.group(1))
    return call_ms, shares


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", default="lstm", choices=["lstm", "rnn", "gru"])
    parser.add_argument("--op", default="train", choices=["train", "forward"])
    parser.add_argument("--configs", default="0,1,2,3",
                        help="indices into " + str(CONFIGS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        print("perf is not installed (Debian: linux-perf); nothing measured")
        return 0
    names = [name for name, _ in PARTS] + ["other"]
    print(f"crnn {args.cell} {args.op}, float32, {args.threads} thread(s), "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          "share of the samples (%) by part")
    print(f"{'config (T,B,D,H,K)':24} {'ms/call':>8} " + " ".join(f"{n[:10]:>10}" for n in names))
    for index in map(int, args.configs.split(",")):
        call_ms, shares = profile(args.cell, args.op, CONFIGS[index], args.seconds, args.threads)
        print(f"{str(CONFIGS[index]):24} {call_ms:8.3f} "
              + " ".join(f"{shares.get(n, 0.0):10.1f}" for n in names))
    print("columns: " + "; ".join(f"{name} = {', '.join(keys)}" for name, keys in PARTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
