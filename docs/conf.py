"""Sphinx configuration of crnn's documentation site.

Build it with ``python -m sphinx -W -b html docs docs/_build/html`` after
``pip install ".[docs]"``; ``-b doctest`` runs every example of the pages and
of the docstrings the reference pulls in.  The reference documents the
installed crnn (its compiled extensions are not in ``src/``).
"""
import crnn

project = "crnn"
author = "The crnn developers"
copyright = "The crnn developers"
release = crnn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
# `name` in a docstring links to it when Sphinx knows it, else shows as code.
default_role = "py:obj"

# MyST: $...$ and $$...$$ math, and ::: fences for directives.
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# The reference: NumPy-style docstrings, signatures from the code.
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autoclass_content = "class"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True

# Examples run: every doctest block of the pages and of the docstrings.
# `:skipif: not installed("torch")` skips an example whose optional package
# is missing (CI installs PyTorch, onnx and ONNX Runtime, so it runs them all).
doctest_global_setup = """
import importlib.util
import numpy as np
import crnn

def installed(name):
    return importlib.util.find_spec(name) is not None
"""

# Links into the libraries crnn's users know; resolved only when reachable
# (a build without network keeps the text and warns nothing).
intersphinx_mapping = {}

html_theme = "furo"
html_title = f"crnn {release}"
html_static_path = []
