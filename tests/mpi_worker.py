"""Run under ``mpiexec -n k python mpi_worker.py OUTDIR JOB [ARGS...]`` by
tests/test_distributed.py.  Every rank writes OUTDIR/<name>.rank<r>.npz.

Jobs:
  cases NAME...           the runs of distributed_cases.py
  touched                 the rows of an array-like each rank reads
  verbose [all]           fit(verbose=2): rank 0 prints, or every rank
  resume PATH EPOCHS      8 epochs straight vs 4 then resume_from (MPI)
  fail RANK               rank RANK gets bad data in its share mid-epoch
  raise-callback RANK     a callback raises on rank RANK only
  mismatch RANK           rank RANK passes a different number of epochs
  bad-resume PATH         resume_from a file of another model shape
  nan                     an infinite input in rank 1's share mid-epoch
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np                      # noqa: E402
from mpi4py import MPI                  # noqa: E402

import crnn                             # noqa: E402
import distributed_cases                # noqa: E402

comm = MPI.COMM_WORLD
rank = comm.rank
out, job, args = sys.argv[1], sys.argv[2], sys.argv[3:]


def write(name, arrays):
    np.savez(os.path.join(out, f"{name}.rank{rank}.npz"), **arrays)


def report_error(name, error):
    with open(os.path.join(out, f"{name}.rank{rank}.err"), "w") as handle:
        handle.write(f"{type(error).__name__}\n{error}")


if job == "cases":
    for name in args:
        trainer, history = distributed_cases.CASES[name](comm, rank)
        write(name, distributed_cases.summary(trainer, history))

elif job == "resume":
    path, = args
    straight, history = distributed_cases.resume_case(comm, rank, epochs=8)
    write("straight", distributed_cases.summary(straight, history))
    first, _ = distributed_cases.resume_case(comm, rank, epochs=4, checkpoint=path)
    comm.Barrier()
    resumed, history = distributed_cases.resume_case(comm, rank, epochs=8,
                                                     resume_from=path, model_seed=99)
    write("resumed", distributed_cases.summary(resumed, history))

elif job == "verbose":
    model = crnn.RNN(3, 4, 2, seed=0)
    trainer = crnn.Trainer(model, batch_size=4, seed=0, comm=comm)
    if args == ["all"]:
        trainer.verbose_ranks = range(comm.size)
    X = np.random.default_rng(0).normal(size=(12, 5, 3))
    trainer.fit(X, np.zeros((12, 5), dtype=int), epochs=2, verbose=2)

elif job == "touched":
    _, _, rows = distributed_cases.touched_rows(comm, rank)
    write("touched", {"rows": np.asarray(rows)})

elif job in ("fail", "raise-callback", "mismatch", "bad-resume", "nan"):
    try:
        distributed_cases.faulty(job, comm, rank, args)
    except Exception as error:       # every rank must get here, none hang
        report_error(job, error)
    else:
        report_error(job, RuntimeError("no error"))

else:
    raise SystemExit(f"unknown job {job}")
