"""Scaling of data-parallel training over MPI, and training on a corpus
larger than memory (issue 18; docs/distributed.md uses its numbers).

    python benchmarks/bench_scaling.py                 # throughput table
    python benchmarks/bench_scaling.py --corpus-gb 2   # peak RSS on a 2 GB corpus

Throughput: sequences per second of ``Trainer.fit`` (Adam, float32) for

  - 1 rank x 1 thread, 2 ranks x 1 thread (``mpiexec -n 2``), 1 rank x 2
    threads (crnn's own threads), and 3 ranks x 1 thread when asked
    (``--ranks 3``; on 2 cores that oversubscribes)

for two configurations: the LSTM (T, B, D, H, K) = (100, 64, 64, 256, 64)
with global batch 64, and the char model of ``crnn train`` (a 1 x 256 LSTM
over 98 symbols, batch 32, truncated BPTT every 64 steps).  Each row also
gives the time per step spent in the step's Allreduce (as the trainer
counts it: waiting for the slowest rank included) and, measured apart after
a barrier, the time of one Allreduce of the same buffer alone.  "cpu ms"
is rank 0's processor time per step (all its threads): on a machine shared
with other work it shows how the work was split, apart from waiting.  The goal of
the issue: 2 ranks x 1 thread at >= 1.7x the throughput of 1 rank x 1
thread.

Corpus: generates a corpus of at least --corpus-gb GB (Python's standard
library sources repeated, the file order shuffled every copy), builds the
token cache (two streaming passes), then trains the char model on
memory-mapped rows for --corpus-steps steps, and prints the peak RSS of
the training process (Linux ``ru_maxrss``), the goal being under 1 GB.

Every worker is a subprocess with OPENBLAS_NUM_THREADS and CRNN_NUM_THREADS
set; mpiexec is the one beside this Python (pip install "crnn[mpi]").
"""
import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np

HERE = os.path.abspath(__file__)

CONFIGS = {
    # name: (T, B, D, H, K, bptt, token input)
    "lstm-100-64-64-256-64": (100, 64, 64, 256, 64, None, False),
    "char-lstm-256": (256, 32, 98, 256, 98, 64, True),
}


# ------------------------------------------------------------------ worker

def worker(config, steps, warmup, divide=1):
    """Train `config` for warmup + steps steps (under MPI when launched so),
    its batch divided by `divide`; rank 0 prints one JSON line."""
    import crnn
    comm = None
    if os.environ.get("PMI_SIZE") or os.environ.get("OMPI_COMM_WORLD_SIZE"):
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
    T, B, D, H, K, bptt, tokens = CONFIGS[config]
    B //= divide
    chunks = 1 if bptt is None else T // bptt
    n = B * -(-(steps + warmup) // chunks)
    rng = np.random.default_rng(0)
    X = rng.integers(0, D, size=(n, T)) if tokens else \
        rng.normal(size=(n, T, D)).astype(np.float32)
    y = rng.integers(0, K, size=(n, T))
    model = crnn.LSTM(D, H, K, seed=0)
    trainer = crnn.Trainer(model, "adam", lr=1e-3, batch_size=B, seed=0, comm=comm)
    marks = []

    class Clock:
        def on_batch_end(self, batch, logs):
            marks.append((time.perf_counter(), trainer.allreduce_seconds,
                          time.process_time()))

    trainer.fit(X, y, epochs=1, shuffle=False, verbose=0, bptt=bptt,
                callbacks=[Clock()])
    (t0, a0, c0), (t1, a1, c1) = marks[warmup - 1], marks[-1]
    measured = len(marks) - warmup
    step = (t1 - t0) / measured
    result = {"config": config, "ranks": 1 if comm is None else comm.size,
              "threads": crnn.get_num_threads(), "step_s": step,
              "sequences_per_s": B / step * (1 if bptt is None else 1 / chunks),
              "allreduce_per_step_s": (a1 - a0) / measured,
              "cpu_per_step_s": (c1 - c0) / measured,
              "parameters": int(sum(p.size for p in model.params.values()))}
    if comm is not None:
        buffer = np.zeros(result["parameters"] + 5, dtype=np.float32)
        out = np.empty_like(buffer)
        comm.Barrier()
        began = time.perf_counter()
        for _ in range(20):
            comm.Allreduce(buffer, out)
        result["allreduce_alone_s"] = (time.perf_counter() - began) / 20
    if comm is None or comm.rank == 0:
        print(json.dumps(result), flush=True)


def run_worker(config, ranks, threads, steps, warmup, divide=1):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads),
               CRNN_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    command = [sys.executable, HERE, "--worker", config, "--steps", str(steps),
               "--warmup", str(warmup), "--divide", str(divide)]
    if ranks > 1:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        command = [mpiexec if os.path.exists(mpiexec) else "mpiexec", "-n",
                   str(ranks)] + command
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=1800)
    if done.returncode:
        raise SystemExit(f"worker failed: {' '.join(command)}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def scaling(args):
    print(f"# crnn data-parallel scaling, {os.cpu_count()} CPUs; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"{args.steps} steps a run, median of {args.repeat}")
    # (ranks, threads, batch divided by): the last row, one process on half
    # the batch, is the 2-rank row's ceiling (2 x its ratio): each rank
    # computes half a batch, at that batch's efficiency
    layouts = ([(1, 1, 1), (2, 1, 1), (1, 2, 1)]
               + ([(3, 1, 1)] if args.ranks >= 3 else []) + [(1, 1, 2)])
    for config in args.configs:
        # --repeat rounds over the layouts, interleaved so that a slow spell
        # of a shared machine meets every layout; each row is its median run
        runs = {layout: [] for layout in layouts}
        for _ in range(args.repeat):
            for ranks, threads, divide in layouts:
                runs[ranks, threads, divide].append(run_worker(
                    config, ranks, threads, args.steps, args.warmup, divide))
        rows = {layout: sorted(found, key=lambda row: row["step_s"])[len(found) // 2]
                for layout, found in runs.items()}
        base = rows[1, 1, 1]["sequences_per_s"]
        print(f"\n{config}: {rows[1, 1, 1]['parameters']:,} parameters, "
              f"{4 * rows[1, 1, 1]['parameters'] / 1e6:.2f} MB of float32 gradients per step")
        print(f"{'layout':<22}{'step ms':>10}{'cpu ms':>9}{'seq/s':>10}{'ratio':>8}"
              f"{'allreduce ms/step':>20}{'allreduce alone ms':>20}")
        for (ranks, threads, divide), row in rows.items():
            alone = row.get("allreduce_alone_s")
            label = f"{ranks} rank x {threads} thr" + (", B/2" if divide > 1 else "")
            print(f"{label:<22}{row['step_s'] * 1e3:>10.1f}"
                  f"{row['cpu_per_step_s'] * 1e3:>9.1f}"
                  f"{row['sequences_per_s']:>10.1f}{row['sequences_per_s'] / base:>8.2f}"
                  f"{row['allreduce_per_step_s'] * 1e3:>20.2f}"
                  f"{'' if alone is None else f'{alone * 1e3:.2f}':>20}")
        ceiling = 2 * rows[1, 1, 2]["sequences_per_s"] / base
        print(f"2 ranks x 1 thr: {rows[2, 1, 1]['sequences_per_s'] / base:.2f} of 1 rank; "
              f"its ceiling, one process's step on half the batch: {ceiling:.2f}")
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(json.dumps({"config": config, "rows": [
                    dict(row, layout=list(key)) for key, row in rows.items()]}) + "\n")


# ------------------------------------------------------------------ corpus

def make_corpus(folder, gigabytes, seed=0):
    """Python's standard library sources, copied until the folder holds
    `gigabytes` GB, the order of the files shuffled in every copy."""
    root = sysconfig.get_paths()["stdlib"]
    texts = []
    for base, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d not in ("site-packages",
                                                                  "__pycache__"))
        for name in sorted(names):
            if name.endswith(".py"):
                try:
                    with open(os.path.join(base, name), encoding="utf-8") as handle:
                        texts.append(handle.read().encode("utf-8"))
                except (OSError, UnicodeDecodeError):
                    pass
    target = int(gigabytes * 1e9)
    written, copy = 0, 0
    shuffler = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    while written < target:
        shuffler.shuffle(texts)
        with open(os.path.join(folder, f"copy{copy:04d}.txt"), "wb") as handle:
            for text in texts:
                handle.write(text)
                written += len(text)
        copy += 1
    return written, copy


def corpus_worker(folder, cache, steps):
    """Build (or open) the token cache and train the char model on
    memory-mapped rows; prints one JSON line with the peak RSS."""
    import crnn
    from crnn import cli, corpus
    began = time.perf_counter()
    ids, vocabulary, files = corpus.token_cache([folder], cache)
    cache_s = time.perf_counter() - began
    rss_after_cache = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    X, y = cli.as_rows(ids, 64 * 16)
    model = crnn.LSTM(len(vocabulary), 256, len(vocabulary), seed=0)
    trainer = crnn.Trainer(model, "adam", lr=3e-3, batch_size=32, clip_norm=5.0, seed=0)
    done = []

    class Stop:
        def on_batch_end(self, batch, logs):
            done.append(logs["loss"])
            return len(done) >= steps

    began = time.perf_counter()
    trainer.fit(X, y, epochs=1, bptt=64, verbose=0, callbacks=[Stop()])
    print(json.dumps({
        "tokens": int(len(ids)), "vocabulary": len(vocabulary), "files": len(files),
        "rows": int(len(X)), "token_dtype": str(ids.dtype), "cache_s": cache_s,
        "train_steps": len(done), "train_s": time.perf_counter() - began,
        "first_loss": done[0], "last_loss": done[-1],
        "peak_rss_mb_after_cache": rss_after_cache / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}),
        flush=True)


def corpus_benchmark(args):
    folder = args.corpus_dir or tempfile.mkdtemp(prefix="crnn-corpus-")
    try:
        began = time.perf_counter()
        written, copies = make_corpus(os.path.join(folder, "text"), args.corpus_gb)
        print(f"generated {written / 1e9:.2f} GB in {copies} files in "
              f"{time.perf_counter() - began:.0f} s")
        runs = []
        for label in ("first run (builds the cache)", "second run (opens the cache)"):
            done = subprocess.run(
                [sys.executable, HERE, "--corpus-worker", os.path.join(folder, "text"),
                 os.path.join(folder, "cache"), str(args.corpus_steps)],
                capture_output=True, text=True, timeout=7200,
                env=dict(os.environ, OPENBLAS_NUM_THREADS="1", CRNN_NUM_THREADS="1"))
            if done.returncode:
                raise SystemExit(done.stderr)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append(result)
            print(f"{label}: {result['tokens']:,} tokens ({result['token_dtype']}, "
                  f"{result['vocabulary']} symbols, {result['rows']:,} rows), cache "
                  f"{result['cache_s']:.0f} s; {result['train_steps']} steps in "
                  f"{result['train_s']:.1f} s, loss {result['first_loss']:.3f} -> "
                  f"{result['last_loss']:.3f}; peak RSS {result['peak_rss_mb']:.0f} MB "
                  f"({result['peak_rss_mb_after_cache']:.0f} MB after the cache)")
        return runs
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=8, help="measured steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps not measured")
    parser.add_argument("--ranks", type=int, default=2, help="3 adds a 3-rank row")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds over the layouts; each row is the median run")
    parser.add_argument("--json", help="append the rows to this file")
    parser.add_argument("--corpus-gb", type=float, help="run the corpus benchmark")
    parser.add_argument("--corpus-steps", type=int, default=20)
    parser.add_argument("--corpus-dir", help="where to generate it (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated corpus")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--divide", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--corpus-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.warmup, args.divide)
    elif args.corpus_worker:
        corpus_worker(args.corpus_worker[0], args.corpus_worker[1],
                      int(args.corpus_worker[2]))
    elif args.corpus_gb:
        corpus_benchmark(args)
    else:
        scaling(args)


if __name__ == "__main__":
    main()
