"""``crnn`` under mpiexec for tests/test_distributed_cli.py, recording each
rank's process id first (OUT/pid.rank<r>) so that a test can kill one:
    mpiexec -n k python mpi_cli.py OUT train ...
"""
import os
import sys

out = sys.argv[1]
rank = os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
with open(os.path.join(out, f"pid.rank{rank}"), "w") as handle:
    handle.write(str(os.getpid()))

from crnn.cli import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
