"""crnn: fast CPU recurrent networks (vanilla RNN, LSTM, GRU) with BPTT, in Cython."""
from ._version import __version__
from .interop import from_torch
from ._onnx_import import from_onnx
from .io import load
from .models import GRU, LSTM, RNN
from . import optim
from .threads import get_num_threads, set_num_threads
from .trainer import History, Trainer

__all__ = ["GRU", "LSTM", "RNN", "__version__", "from_onnx", "from_torch", "load",
           "optim",
           "History", "Trainer", "get_num_threads", "set_num_threads"]


def get_include():
    """The folder of crnn's C header and Cython declarations, for building
    extensions on crnn.

    It holds ``crnn.h`` and ``api.pxd`` (it is the ``crnn`` package's own
    folder, not all of site-packages).  A C or C++ extension adds it to
    ``include_dirs``, does ``#include <crnn.h>`` and calls ``crnn_import()``
    once in its module's init function; it then calls crnn's engine
    (``crnn_forward_f64``, ...) through a table of function pointers, with
    nothing to link against.  A Cython extension's ``cimport crnn.api``
    finds ``crnn/api.pxd`` on ``sys.path`` by itself; passing this folder
    too does no harm.

    Returns
    -------
    str
        The absolute path of the folder that holds ``crnn.h`` and
        ``api.pxd``.

    Examples
    --------
    >>> import os
    >>> sorted(name for name in os.listdir(crnn.get_include())
    ...        if name in ("crnn.h", "api.pxd"))
    ['api.pxd', 'crnn.h']
    """
    import os
    return os.path.dirname(os.path.abspath(__file__))


__all__.append("get_include")
