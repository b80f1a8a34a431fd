"""Fuzzing a model's state, pickled state and saved file (issue 21, part 3):
tests/fuzz_state.py's hypothesis test runs in a subprocess, so a crash is a
test failure (its stderr's last line is the example that crashed) rather
than a dead run.  Every mutation must give a result or a ValueError,
TypeError or AttributeError."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("hypothesis")

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz_state.py")
EXAMPLES = 500


def test_mutated_models_pickles_and_files_never_crash():
    result = subprocess.run([sys.executable, SCRIPT, str(EXAMPLES)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (
        f"exit status {result.returncode}; the last examples and the error:\n"
        + result.stderr[-6000:])
    assert result.stdout.strip().endswith("no crash, only accepted errors")
