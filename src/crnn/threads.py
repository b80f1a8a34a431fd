"""How many threads crnn uses, and how they share the cores with BLAS.

crnn's threads (a small team, _team.h) share each time step out by hidden
units: the recurrent products (the packed GEMM) and the point-wise cell.  Two thread pools spinning on
the same cores slow each other down badly (measured: a 2-thread LSTM step
slower than a 1-thread one), so while a model call runs with more than one
crnn thread, the BLAS libraries of the process are held at one thread
(``single_threaded_blas``) and crnn's team splits the large BLAS products
instead: each thread calls single-threaded BLAS on its own band of rows or
columns, or, for the long thin weight-gradient products, on its own range
of the T·B rows they sum over (the parts' sums then added in order).  One
pool, never nested.  The BLAS libraries are found by threadpoolctl (the
loader's own list of loaded libraries: OpenBLAS, MKL, BLIS, FlexiBLAS on
Linux, macOS and Windows).  Where the BLAS that crnn calls (SciPy's) has no
thread controls that threadpoolctl knows (Apple's Accelerate, a reference
BLAS), BLAS keeps its own threads and only crnn's own steps are split:
``blas_status()`` says which.

The thread count (docs/performance.md, "How many threads", has the rules
and the cost model that caps them per job): ``CRNN_NUM_THREADS``, else
``OMP_NUM_THREADS``, else ``OPENBLAS_NUM_THREADS``, else the CPUs this
process may run on divided by the processes of its job on this node (MPI,
Slurm), at least 1.  The time steps give identical results for every
thread count; the split BLAS products can differ in the last bits (OpenBLAS
picks its kernel by shape; a split by rows sums in another order), so
gradients are reproducible for a fixed thread count.
"""
import contextlib
import os
import re
import threading

from . import _parallel
from ._parallel import get_num_threads, split_gemms

__all__ = ["get_num_threads", "set_num_threads", "default_num_threads",
           "ranks_on_this_node", "share_node", "single_threaded_blas",
           "blas_status"]

_VARIABLES = ("CRNN_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")

# Launchers' count of this job's processes on this node: MPICH's Hydra
# and Intel MPI, Open MPI, PMIx (Open MPI 5, srun --mpi=pmix), MVAPICH2.
_LOCAL_RANK_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
                         "PMIX_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")

# set by set_num_threads: the user chose, and share_node leaves it alone
_chosen = False


def set_num_threads(threads):
    """Set the number of threads of crnn's own parallel work.

    Parameters
    ----------
    threads : int
        Threads for the time steps and the split BLAS products, the caller
        included (at most 16).  BLAS keeps its own setting outside model
        calls.

    Raises
    ------
    ValueError
        If `threads` is less than 1.

    Examples
    --------
    >>> import crnn
    >>> before = crnn.get_num_threads()
    >>> crnn.set_num_threads(1)
    >>> crnn.get_num_threads()
    1
    >>> crnn.set_num_threads(before)
    """
    global _chosen
    _parallel.set_num_threads(threads)
    _chosen = True


def available_cpus():
    """The CPUs this process may run on (its affinity mask where the
    platform has one), at least 1."""
    counter = getattr(os, "process_cpu_count", None)     # Python 3.13
    if counter is not None:
        return counter() or 1
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:   # macOS, Windows
        return os.cpu_count() or 1


def _slurm_tasks_here(environ):
    """This node's task count of a Slurm step, or None outside a step.
    SLURM_STEP_TASKS_PER_NODE reads like "2(x3),1": 2 tasks on each of the
    first three nodes, 1 on the fourth; SLURM_NODEID picks this node."""
    if "SLURM_STEP_ID" not in environ and "SLURM_STEPID" not in environ:
        return None            # a batch script's shell, not a task of a step
    spec = environ.get("SLURM_STEP_TASKS_PER_NODE",
                       environ.get("SLURM_TASKS_PER_NODE", ""))
    counts = []
    for item in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if match is None:
            counts = []
            break
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    node = environ.get("SLURM_NODEID", "0")
    if counts and node.isdigit() and int(node) < len(counts):
        return counts[int(node)]
    per_node = environ.get("SLURM_NTASKS_PER_NODE", "")
    return int(per_node) if per_node.isdigit() else None


def ranks_on_this_node(environ=None):
    """The processes of this job on this node, as the launcher announced.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read; default ``os.environ``.

    Returns
    -------
    int
        The first integer >= 1 of ``MPI_LOCALNRANKS`` (MPICH's Hydra, Intel
        MPI), ``OMPI_COMM_WORLD_LOCAL_SIZE`` (Open MPI),
        ``PMIX_LOCAL_SIZE`` (PMIx), ``MV2_COMM_WORLD_LOCAL_SIZE``
        (MVAPICH2), else, inside a Slurm step, this node's entry of
        ``SLURM_STEP_TASKS_PER_NODE`` (or ``SLURM_TASKS_PER_NODE``, or
        ``SLURM_NTASKS_PER_NODE``); 1 when no launcher said.

    Examples
    --------
    >>> from crnn.threads import ranks_on_this_node
    >>> ranks_on_this_node({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"})
    4
    >>> ranks_on_this_node({"SLURM_STEP_ID": "0", "SLURM_NODEID": "3",
    ...                     "SLURM_STEP_TASKS_PER_NODE": "2(x3),1"})
    1
    >>> ranks_on_this_node({})
    1
    """
    environ = os.environ if environ is None else environ
    for name in _LOCAL_RANK_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) >= 1:
            return int(value)
    tasks = _slurm_tasks_here(environ)
    return tasks if tasks is not None and tasks >= 1 else 1


def default_num_threads(environ=None, ranks=None):
    """The thread count crnn starts with.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read; default ``os.environ``.
    ranks : int, optional
        The processes sharing this one's CPUs; default
        ``ranks_on_this_node(environ)``.

    Returns
    -------
    int
        The first of ``CRNN_NUM_THREADS``, ``OMP_NUM_THREADS`` (its first
        entry) and ``OPENBLAS_NUM_THREADS`` that holds an integer >= 1, else
        the CPUs this process may run on divided by `ranks`, at least 1.

    Examples
    --------
    >>> from crnn.threads import default_num_threads
    >>> default_num_threads({"OMP_NUM_THREADS": "4,2", "OPENBLAS_NUM_THREADS": "8"})
    4
    >>> default_num_threads({"MPI_LOCALNRANKS": "1000"})
    1
    """
    environ = os.environ if environ is None else environ
    for name in _VARIABLES:
        # OMP_NUM_THREADS may be a list per nesting level ("4,2"): the first
        first = environ.get(name, "").split(",")[0].strip()
        if first.isdigit() and int(first) >= 1:
            return int(first)
    if ranks is None:
        ranks = ranks_on_this_node(environ)
    return max(1, available_cpus() // max(1, ranks))


def _sharing_ranks(comm):
    """The ranks of `comm` on this node whose CPUs overlap this one's (this
    one included): its shared-memory split, then each rank's affinity."""
    from mpi4py import MPI
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        try:
            mine = frozenset(os.sched_getaffinity(0))
        except AttributeError:   # macOS, Windows: every rank may use every CPU
            return node.Get_size()
        return sum(1 for cpus in node.allgather(mine) if cpus & mine)
    finally:
        node.Free()


def share_node(comm, environ=None):
    """Set the thread count to this process's share of its node's CPUs.

    Called by ``Trainer(comm=...)`` on every rank (it is collective).  Does
    nothing when the count was chosen: by ``set_num_threads`` or by one of
    the variables ``default_num_threads`` reads first.

    Parameters
    ----------
    comm : mpi4py communicator
        The ranks of the job; those on this node are found by its
        shared-memory split (``Split_type(COMM_TYPE_SHARED)``), and counted
        where their CPU sets overlap this process's.
    environ : mapping, optional
        The environment to read; default ``os.environ``.

    Returns
    -------
    int
        The thread count now.

    Examples
    --------
    Under ``mpiexec -n 2`` on a 2-CPU machine each rank gets 1 thread
    (``Trainer(comm=MPI.COMM_WORLD)`` calls it).  Anything that is not an
    MPI communicator leaves the count as it is:

    >>> import crnn
    >>> from crnn.threads import share_node
    >>> share_node(object()) == crnn.get_num_threads()
    True
    """
    environ = os.environ if environ is None else environ
    chosen_by_variable = any(
        environ.get(name, "").split(",")[0].strip().isdigit() for name in _VARIABLES)
    if _chosen or chosen_by_variable or not hasattr(comm, "Split_type"):
        return get_num_threads()
    try:
        ranks = _sharing_ranks(comm)
    except ImportError:          # a communicator that is not mpi4py's
        return get_num_threads()
    _parallel.set_num_threads(default_num_threads(environ, ranks=ranks))
    return get_num_threads()


# ------------------------------------------------------------- BLAS

class _BlasControls:
    """The thread controls of the process's BLAS libraries (threadpoolctl's
    controllers) and which one is SciPy's, the BLAS crnn calls."""

    def __init__(self, controllers, scipy_folders, failure=""):
        self.controllers = list(controllers)
        self.failure = failure       # why threadpoolctl found nothing, if it failed
        inside = [c for c in self.controllers
                  if any(os.path.abspath(c.filepath).startswith(folder)
                         for folder in scipy_folders)]
        # SciPy's wheels carry their BLAS in their own folders; elsewhere
        # (conda, a distribution) the one BLAS loaded is SciPy's
        self.crnn_blas = (inside[0] if inside else
                          self.controllers[0] if len(self.controllers) == 1 else None)

    @classmethod
    def find(cls):
        import scipy
        import scipy.linalg   # noqa: F401  (loads SciPy's BLAS first)
        here = os.path.abspath(os.path.dirname(scipy.__file__))
        folders = (here + os.sep, here + ".libs" + os.sep)
        try:
            from ._vendor.threadpoolctl import ThreadpoolController
            found = ThreadpoolController().select(user_api="blas").lib_controllers
        except Exception as error:     # noqa: BLE001 - a loader it cannot read
            return cls([], folders, failure=f"threadpoolctl failed: {error!r}")
        return cls(found, folders)


_controls = None      # _BlasControls, found at the first hold
_hold = threading.Lock()
_holders = 0          # model calls inside single_threaded_blas right now
_saved = []           # (controller, its thread count) before the first of them


def _blas_controls():
    global _controls
    if _controls is None:
        with _hold:
            if _controls is None:
                _controls = _BlasControls.find()
    return _controls


def blas_status():
    """Which BLAS crnn holds at one thread while it splits the products.

    Returns
    -------
    dict
        ``held``: True when SciPy's BLAS (the one crnn calls) has thread
        controls, so that multi-threaded calls hold it at one thread and
        split its products among crnn's threads; ``library`` and ``api``:
        its file and kind ("openblas", "mkl", ...; None when unknown);
        ``others``: the other BLAS libraries held with it (numpy's, ...);
        ``reason``: one line saying why not, when not held.

    Examples
    --------
    >>> from crnn.threads import blas_status
    >>> sorted(blas_status())
    ['api', 'held', 'library', 'others', 'reason']
    """
    controls = _blas_controls()
    crnn_blas = controls.crnn_blas
    others = [c.filepath for c in controls.controllers if c is not crnn_blas]
    if crnn_blas is None:
        return {"held": False, "library": None, "api": None, "others": others,
                "reason": (controls.failure or "SciPy's BLAS has no thread controls "
                           "that threadpoolctl knows") + ": BLAS keeps its own threads, "
                          "crnn splits only its time steps"}
    return {"held": True, "library": crnn_blas.filepath,
            "api": crnn_blas.internal_api, "others": others, "reason": ""}


_NOTHING = contextlib.nullcontext()


# Below this many multiply-adds a call is left alone: splitting would not
# pay for switching OpenBLAS's threads (measured: +10 µs on a 100 µs call).
HOLD_MIN_WORK = 1 << 22


def single_threaded_blas(work=HOLD_MIN_WORK):
    """While crnn runs on more than one thread: every BLAS library at one
    thread and, where SciPy's is among them, crnn's team splitting the BLAS
    products; restored when the last model call leaves (other code calling
    BLAS meanwhile gets one thread too).  Does nothing with one crnn thread,
    without any BLAS thread controls, or for a call of fewer than
    HOLD_MIN_WORK multiply-adds (`work`, an estimate)."""
    if work < HOLD_MIN_WORK or get_num_threads() == 1 or not _blas_controls().controllers:
        return _NOTHING
    return _blas_held_at_one_thread()


@contextlib.contextmanager
def _blas_held_at_one_thread():
    global _holders, _saved
    controls = _blas_controls()
    with _hold:
        if _holders == 0:
            _saved = [(c, c.get_num_threads()) for c in controls.controllers]
            for controller, threads in _saved:
                if threads != 1:
                    controller.set_num_threads(1)
            split_gemms(controls.crnn_blas is not None)
        _holders += 1
    try:
        yield
    finally:
        with _hold:
            _holders -= 1
            if _holders == 0:
                split_gemms(False)
                for controller, threads in _saved:
                    if threads != 1:
                        controller.set_num_threads(threads)


_parallel.set_num_threads(default_num_threads())
