"""crnn: fast CPU recurrent networks (vanilla RNN, LSTM, GRU) with BPTT, in Cython."""
from ._version import __version__
from .interop import from_torch
from .io import load
from .models import GRU, LSTM, RNN
from . import optim
from .threads import get_num_threads, set_num_threads
from .trainer import History, Trainer

__all__ = ["GRU", "LSTM", "RNN", "__version__", "from_torch", "load", "optim",
           "History", "Trainer", "get_num_threads", "set_num_threads"]


def get_include():
    """The directory to add to a Cython build's include path so that
    ``cimport crnn.api`` finds crnn's shipped .pxd files (the directory that
    holds the ``crnn`` package)."""
    import os
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


__all__.append("get_include")
