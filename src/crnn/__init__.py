"""crnn: fast CPU recurrent networks (vanilla RNN, LSTM) with BPTT, in Cython."""
from ._version import __version__
from .models import RNN

__all__ = ["RNN", "__version__"]
