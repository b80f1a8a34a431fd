"""Data-parallel training over MPI: the pieces ``Trainer(..., comm=...)`` uses.

crnn has no cluster of its own.  It takes an MPI communicator from
``mpi4py`` (or any object with ``rank``, ``size``, ``Allreduce`` and
``Bcast`` that behaves like one) and uses exactly two collectives on numpy
buffers: ``Allreduce`` with its default operation (a sum) and ``Bcast``.
The guide is docs/distributed.md.

    from mpi4py import MPI
    trainer = crnn.Trainer(model, batch_size=64, comm=MPI.COMM_WORLD)

What lives here:

- ``check_comm``: refuse what is not a communicator (TypeError);
- ``launched_by_mpi`` and ``world``: how ``crnn train`` finds out that
  ``mpiexec`` (or ``srun``) started it, and the clear error when mpi4py is
  missing;
- ``split``: a contiguous share of a batch per rank, balanced by positions;
- ``Team``: the trainer's side of the protocol — gathering a fingerprint
  from every rank, agreeing on errors so that no rank is left waiting in a
  collective another one has left, broadcasting rank 0's state;
- ``RankError``: what the ranks that did not fail raise when another did.
"""
import builtins
import os
import pickle
import sys

import numpy as np

from . import threads

__all__ = ["RankError", "Team", "check_comm", "launched_by_mpi", "split", "world"]

INSTALL_HINT = 'pip install "crnn[mpi]"'

# Environment variables that MPI launchers set in the processes they start,
# as (rank variable, size variable): MPICH/Intel MPI (Hydra's PMI), Open MPI,
# PMIx launchers (Open MPI 5, Slurm with --mpi=pmix), MVAPICH.
_LAUNCHER_VARIABLES = (
    ("PMI_RANK", "PMI_SIZE"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMIX_RANK", None),
    ("MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE"),
)

_REQUIRED = ("rank", "size", "Allreduce", "Bcast")

# Bytes of one error message in the message exchange (longer ones are cut).
_MESSAGE_BYTES = 600


class RankError(RuntimeError):
    """Raised on the ranks that did not fail when another rank did.

    ``ranks`` lists the failing ranks, ``messages`` their
    ``"TypeName: message"`` lines (cut to a few hundred bytes)."""

    def __init__(self, message, ranks, messages):
        super().__init__(message)
        self.ranks = ranks
        self.messages = messages


def check_comm(comm):
    """`comm` itself when it looks like an MPI communicator, else TypeError."""
    missing = [name for name in _REQUIRED if not hasattr(comm, name)]
    if missing:
        raise TypeError(
            f"comm must be an MPI communicator (e.g. mpi4py.MPI.COMM_WORLD: an "
            f"object with rank, size, Allreduce and Bcast), got "
            f"{type(comm).__name__}, which has no {', '.join(missing)}")
    for name in ("Allreduce", "Bcast"):
        if not callable(getattr(comm, name)):
            raise TypeError(f"comm.{name} must be callable, got "
                            f"{type(getattr(comm, name)).__name__}")
    rank, size = comm.rank, comm.size
    if not (isinstance(size, (int, np.integer)) and size >= 1
            and isinstance(rank, (int, np.integer)) and 0 <= rank < size):
        raise TypeError(
            f"comm.rank and comm.size must be integers with 0 <= rank < size, "
            f"got rank={rank!r}, size={size!r}")
    return comm


def launched_by_mpi(environ=None):
    """The world size an MPI launcher announced in the environment
    (``mpiexec``, ``mpirun``, ``srun --mpi=...``), or 0 when none did."""
    environ = os.environ if environ is None else environ
    for rank_name, size_name in _LAUNCHER_VARIABLES:
        if rank_name in environ:
            if size_name is None:
                return int(environ.get("PMIX_SIZE", environ.get("SLURM_NTASKS", "1")) or 1)
            try:
                return max(int(environ.get(size_name, "1")), 1)
            except ValueError:
                return 1
    return 0


def world():
    """``mpi4py.MPI.COMM_WORLD``; ImportError naming the extra to install
    when mpi4py is missing."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            f"training under MPI needs mpi4py and an MPI library: "
            f"{INSTALL_HINT} (mpi4py could not be imported: {error})") from None
    return MPI.COMM_WORLD


def split(weights, parts):
    """Boundaries of `parts` contiguous shares of a sequence of items with
    these `weights` (their positions), as balanced as contiguity allows:
    share k is items ``bounds[k]:bounds[k + 1]``.  A share may be empty
    (fewer items than parts)."""
    weights = np.asarray(weights, dtype=np.float64)
    prefix = np.concatenate([[0.0], np.cumsum(weights)])
    total = prefix[-1]
    bounds = [0]
    for k in range(1, parts):
        target = total * k / parts
        i = int(np.searchsorted(prefix, target))
        if i > 0 and (i > len(weights) or target - prefix[i - 1] <= prefix[i] - target):
            i -= 1
        bounds.append(max(min(i, len(weights)), bounds[-1]))
    bounds.append(len(weights))
    return bounds


def _describe(error):
    text = f"{type(error).__name__}: {error}"
    return text.encode("utf-8")[:_MESSAGE_BYTES].decode("utf-8", "ignore")


def mark_agreed(error):
    """Tag an exception that every rank raises together (no abort needed)."""
    try:
        error._crnn_agreed = True
    except AttributeError:
        pass
    return error


class Team:
    """The ranks of one communicator, seen from one of them."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = int(comm.rank)
        self.size = int(comm.size)
        # each rank its share of this node's CPUs (collective)
        threads.share_node(comm)

    # ------------------------------------------------------------ basics
    def allreduce(self, send, recv=None):
        """Sum `send` over the ranks (a new array unless `recv` is given)."""
        if recv is None:
            recv = np.empty_like(send)
        self.comm.Allreduce(send, recv)
        return recv

    def broadcast_object(self, value):
        """Rank 0's `value` (pickled: it only ever carries crnn's own
        state, between processes of one job) on every rank."""
        if self.rank == 0:
            payload = np.frombuffer(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL),
                                    dtype=np.uint8).copy()
            length = np.array([payload.size], dtype=np.int64)
        else:
            length = np.zeros(1, dtype=np.int64)
        self.comm.Bcast(length, root=0)
        if self.rank != 0:
            payload = np.empty(int(length[0]), dtype=np.uint8)
        self.comm.Bcast(payload, root=0)
        return value if self.rank == 0 else pickle.loads(payload.tobytes())

    def abort(self, error, code=1):
        """Last resort for an error that the other ranks cannot learn about
        through a collective: print it, then end the whole job."""
        sys.stderr.write(f"crnn: rank {self.rank} of {self.size}: {_describe(error)}; "
                         f"aborting the MPI job\n")
        sys.stderr.flush()
        abort = getattr(self.comm, "Abort", None)
        if callable(abort):
            abort(code)

    # ------------------------------------------------------------ errors
    def raise_agreed(self, local_error, failed):
        """Every rank calls this when a reduction showed ``failed`` > 0
        failing ranks.  One more collective exchanges the messages, then
        every rank raises: the failing ones their own error (its message
        prefixed with the rank), the others RankError naming them, or the
        same built-in type (ValueError, TypeError...) when all failing
        ranks raised that type."""
        slots = np.zeros((self.size, _MESSAGE_BYTES + 1), dtype=np.uint8)
        if local_error is not None:
            text = _describe(local_error).encode("utf-8")
            slots[self.rank, 0] = 1
            slots[self.rank, 1:1 + len(text)] = np.frombuffer(text, dtype=np.uint8)
        gathered = self.allreduce(slots)
        ranks = [r for r in range(self.size) if gathered[r, 0]]
        messages = [bytes(gathered[r, 1:]).rstrip(b"\0").decode("utf-8", "ignore")
                    for r in ranks]
        if local_error is not None:
            raise mark_agreed(_with_rank(local_error, self.rank, self.size))
        summary = "; ".join(f"rank {r} of {self.size}: {m}" for r, m in zip(ranks, messages))
        kinds = {m.partition(":")[0] for m in messages}
        if len(kinds) == 1:
            kind = getattr(builtins, next(iter(kinds)), None)
            if isinstance(kind, type) and issubclass(kind, (ValueError, TypeError)):
                bare = "; ".join(f"rank {r} of {self.size}: {m.partition(': ')[2]}"
                                 for r, m in zip(ranks, messages))
                raise mark_agreed(kind(f"{bare} (raised on every rank; this is "
                                       f"rank {self.rank})"))
        raise mark_agreed(RankError(f"training stopped on every rank: {summary}",
                                    ranks, messages))

    def gather_rows(self, values):
        """Every rank's float64 vector `values` (all the same length), as a
        (size, len) array on every rank: an all-gather made of one sum."""
        values = np.asarray(values, dtype=np.float64)
        table = np.zeros((self.size, values.size), dtype=np.float64)
        table[self.rank] = values
        return self.allreduce(table)


def _with_rank(error, rank, size):
    """`error` with "rank r of n: " before its message (same type and
    traceback), for ranks that raise their own error."""
    prefix = f"rank {rank} of {size}: "
    if error.args and isinstance(error.args[0], str):
        if not error.args[0].startswith(prefix):
            error.args = (prefix + error.args[0],) + tuple(error.args[1:])
    elif not error.args:
        error.args = (prefix + type(error).__name__,)
    return error
