"""A PyTorch model's training step with torch.nn.LSTM and with crnn.torch.LSTM.

The model: an LSTM (batch first) + ``nn.Linear(H, K)`` + ``F.cross_entropy``
at every position, float32.  One step: zero the gradients, forward, loss,
``backward()``.  The same model with ``torch.nn.LSTM`` and with
``crnn.torch.LSTM`` (crnn's forward and BPTT inside torch's autograd; the
head, the loss and the rest stay torch's), at (T, B, D, H, K) =
(100, 64, 64, 256, 64) and (100, 32, 32, 128, 32), at 1 and 2 threads.

Each (layer, config, thread count) runs in its own child process with
OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS and CRNN_NUM_THREADS
set to the thread count (idle pools of two libraries in one process spin
against each other); the children of one row run interleaved for
``--rounds`` rounds and the table keeps each side's best median.  The ratio
is torch's time over crnn's (above 1: crnn's layer is faster).  For
reference, the last column is the same step in crnn alone
(``crnn.LSTM(D, H, K).loss_and_grad``: the head and the loss fused into
crnn's engine, no torch).  Timings on a shared machine drift: read the
ratios, and rerun on a quiet machine.

    python benchmarks/bench_torch_adapter.py
    python benchmarks/bench_torch_adapter.py --rounds 5 --target 2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CONFIGS = [(100, 64, 64, 256, 64), (100, 32, 32, 128, 32)]
LAYERS = ("torch", "crnn", "alone")


def child(layer, config, threads, target):
    """Time the training step in this process; print {"ms": median}."""
    import numpy as np
    if layer == "alone":
        alone(config, threads, target)
        return
    import torch
    torch.set_num_threads(threads)
    if layer == "crnn":
        import crnn
        import crnn.torch
        crnn.set_num_threads(threads)
        lstm_class = crnn.torch.LSTM
    else:
        lstm_class = torch.nn.LSTM
    T, B, D, H, K = config
    torch.manual_seed(0)
    lstm = lstm_class(D, H, batch_first=True)
    head = torch.nn.Linear(H, K)
    parameters = list(lstm.parameters()) + list(head.parameters())
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.normal(size=(B, T, D)), dtype=torch.float32)
    y = torch.tensor(rng.integers(0, K, size=(B * T,)))

    def step():
        for p in parameters:
            p.grad = None
        logits = head(lstm(X)[0])
        torch.nn.functional.cross_entropy(logits.reshape(-1, K), y).backward()

    print(json.dumps({"ms": median_ms(step, target)}))


def alone(config, threads, target):
    """crnn's own training step of the same model, for reference."""
    import numpy as np
    import crnn
    crnn.set_num_threads(threads)
    T, B, D, H, K = config
    model = crnn.LSTM(D, H, K, seed=0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(B, T, D)).astype(np.float32)
    y = rng.integers(0, K, size=(B, T))
    print(json.dumps({"ms": median_ms(lambda: model.loss_and_grad(X, y), target)}))


def median_ms(step, target):
    """The median time of `step` in ms, after a warm-up, over about
    `target` seconds of calls."""
    for _ in range(3):
        step()
    start = time.perf_counter()
    step()
    once = time.perf_counter() - start
    times = []
    for _ in range(max(5, int(target / max(once, 1e-6)))):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def measure(layer, config, threads, target):
    env = dict(os.environ)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "CRNN_NUM_THREADS"):
        env[name] = str(threads)
    output = subprocess.run(
        [sys.executable, __file__, "--child", layer, "--shape",
         ",".join(map(str, config)), "--threads", str(threads),
         "--target", str(target)],
        env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])["ms"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--target", type=float, default=1.0,
                        help="seconds of timed steps per child")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--child", choices=LAYERS)
    parser.add_argument("--shape")
    args = parser.parse_args()
    if args.child:
        child(args.child, tuple(int(v) for v in args.shape.split(",")),
              int(args.threads), args.target)
        return
    print("training step, LSTM + Linear + cross-entropy, float32; best median "
          f"of {args.rounds} interleaved rounds (ms)")
    print(f"{'(T, B, D, H, K)':>24} {'threads':>7} {'nn.LSTM':>9} "
          f"{'crnn.torch.LSTM':>16} {'ratio':>6} {'crnn alone':>11}")
    for config in CONFIGS:
        for threads in (int(v) for v in args.threads.split(",")):
            best = {layer: float("inf") for layer in LAYERS}
            for _ in range(args.rounds):
                for layer in LAYERS:
                    best[layer] = min(best[layer],
                                      measure(layer, config, threads, args.target))
            print(f"{str(config):>24} {threads:>7} {best['torch']:9.2f} "
                  f"{best['crnn']:16.2f} {best['torch'] / best['crnn']:5.2f}x "
                  f"{best['alone']:11.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
