"""How many threads crnn uses, and how they share the cores with BLAS.

crnn's threads (a small team, _team.h) share each time step out by hidden
units: the recurrent products (the packed GEMM) and the point-wise cell.  Two thread pools spinning on
the same cores slow each other down badly (measured: a 2-thread LSTM step
slower than a 1-thread one), so while a model call runs with more than one
crnn thread, SciPy's OpenBLAS is held at one thread (``single_threaded_blas``)
and crnn's team splits the large BLAS products instead: each thread calls
single-threaded BLAS on its own band of rows or columns, or, for the long
thin weight-gradient products, on its own range of the T·B rows they sum
over (the parts' sums then added in order).  One pool, never nested.
Where OpenBLAS's thread controls cannot be found, BLAS keeps its own
threads and only the recurrent product is split.

The default thread count, like PyTorch's and OpenMP's: CRNN_NUM_THREADS,
else OMP_NUM_THREADS, else OPENBLAS_NUM_THREADS, else the CPUs this process
may run on.  The time steps give identical results for every thread count;
the split BLAS products can differ in the last bits (OpenBLAS picks its
kernel by shape; a split by rows sums in another order), so gradients are reproducible for a fixed thread count.
"""
import contextlib
import ctypes
import glob
import os
import threading

from ._parallel import get_num_threads, set_num_threads, split_gemms

__all__ = ["get_num_threads", "set_num_threads", "default_num_threads",
           "single_threaded_blas"]

_VARIABLES = ("CRNN_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def default_num_threads(environ=None):
    """The thread count crnn starts with.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read; default ``os.environ``.

    Returns
    -------
    int
        The first of ``CRNN_NUM_THREADS``, ``OMP_NUM_THREADS`` (its first
        entry) and ``OPENBLAS_NUM_THREADS`` that holds an integer >= 1, else
        the number of CPUs this process may run on.

    Examples
    --------
    >>> from crnn.threads import default_num_threads
    >>> default_num_threads({"OMP_NUM_THREADS": "4,2", "OPENBLAS_NUM_THREADS": "8"})
    4
    """
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


def _find_openblas_threads():
    """(get, set) for the thread count of the OpenBLAS that SciPy loaded, or
    None.  SciPy's wheels ship it as scipy.libs/libscipy_openblas*.so (Linux)
    or scipy/.dylibs/libscipy_openblas*.dylib (macOS), symbols prefixed
    scipy_; dlopen of a loaded library returns that same library."""
    import scipy.linalg   # noqa: F401  (loads the library first)
    import scipy
    here = os.path.dirname(scipy.__file__)
    candidates = (glob.glob(os.path.join(here + ".libs", "*openblas*"))
                  + glob.glob(os.path.join(here, ".dylibs", "*openblas*")))
    for path in candidates:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "scipy_openblas64_", "openblas_"):
            try:
                get = getattr(library, prefix + "get_num_threads")
                set_ = getattr(library, prefix + "set_num_threads")
            except AttributeError:
                continue
            get.restype, get.argtypes = ctypes.c_int, []
            set_.restype, set_.argtypes = None, [ctypes.c_int]
            return get, set_
    return None


_openblas = _find_openblas_threads()
_hold = threading.Lock()
_holders = 0          # model calls inside single_threaded_blas right now
_saved = None         # OpenBLAS's thread count before the first of them


_NOTHING = contextlib.nullcontext()


# Below this many multiply-adds a call is left alone: splitting would not
# pay for switching OpenBLAS's threads (measured: +10 µs on a 100 µs call).
HOLD_MIN_WORK = 1 << 22


def single_threaded_blas(work=HOLD_MIN_WORK):
    """While crnn runs on more than one thread: OpenBLAS at one thread and
    crnn's team splitting the BLAS products; restored when the last model
    call leaves (other code calling BLAS meanwhile gets one thread too).
    Does nothing with one crnn thread, without OpenBLAS's controls, or for a
    call of fewer than HOLD_MIN_WORK multiply-adds (`work`, an estimate)."""
    if _openblas is None or work < HOLD_MIN_WORK or get_num_threads() == 1:
        return _NOTHING
    return _blas_held_at_one_thread()


@contextlib.contextmanager
def _blas_held_at_one_thread():
    global _holders, _saved
    get, set_ = _openblas
    with _hold:
        if _holders == 0:
            _saved = get()
            if _saved != 1:
                set_(1)
            split_gemms(True)
        _holders += 1
    try:
        yield
    finally:
        with _hold:
            _holders -= 1
            if _holders == 0:
                split_gemms(False)
                if _saved != 1:
                    set_(_saved)


set_num_threads(default_num_threads())
