"""``python -m crnn``: the same as the ``crnn`` command (crnn.cli)."""
import sys

from .cli import main

sys.exit(main())
