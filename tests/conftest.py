"""pytest configuration for crnn's tests.

crnn itself is imported from the installed package (never from src/). The only
path tweak here makes the helper modules that live beside the tests
(reference.py, torch_helper.py, cases.py) importable.
"""

import os
import sys

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import pytest  # noqa: E402

from reference import CELLS  # noqa: E402


@pytest.fixture(params=CELLS)
def cell(request):
    """Each cell in turn: "rnn" (crnn.RNN), "lstm" (crnn.LSTM), "gru" (crnn.GRU)."""
    return request.param
