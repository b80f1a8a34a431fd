"""crnn: fast CPU recurrent networks (vanilla RNN, LSTM, GRU) with BPTT, in Cython."""
from ._version import __version__
from .models import GRU, LSTM, RNN

__all__ = ["GRU", "LSTM", "RNN", "__version__"]
