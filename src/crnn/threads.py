"""How many threads crnn's own parallel work uses.

crnn parallelises one thing itself: the recurrent product of each time step
(the packed GEMM), split by output columns.  Everything else that runs in
parallel is BLAS, with its own setting (OPENBLAS_NUM_THREADS, or
threadpoolctl).  The two never run at once: the time loop calls no BLAS GEMM.

The default, like PyTorch's and OpenMP's: CRNN_NUM_THREADS, else
OMP_NUM_THREADS, else OPENBLAS_NUM_THREADS, else the CPUs this process may
run on.  Results are identical for every thread count.
"""
import os

from ._blas import get_num_threads, set_num_threads

__all__ = ["get_num_threads", "set_num_threads", "default_num_threads"]

_VARIABLES = ("CRNN_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def default_num_threads(environ=None):
    """The thread count crnn starts with (see the module's docstring)."""
    environ = os.environ if environ is None else environ
    for name in _VARIABLES:
        # OMP_NUM_THREADS may be a list per nesting level ("4,2"): the first
        first = environ.get(name, "").split(",")[0].strip()
        if first.isdigit() and int(first) >= 1:
            return int(first)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # macOS, Windows
        return os.cpu_count() or 1


set_num_threads(default_num_threads())
