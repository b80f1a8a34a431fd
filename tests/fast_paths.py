"""The engine's fast paths, one at a time, for the tests that compare a
path on and off (crnn._plan.use_fast_paths is the one override)."""
from crnn._plan import use_fast_paths


def fast_path(name):
    """toggle(enabled) -> the previous setting, for the fast path `name`."""
    def toggle(enabled):
        return use_fast_paths(**{name: bool(enabled)})[name]
    return toggle
