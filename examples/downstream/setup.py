"""Build a downstream extension against crnn's C-level API.

    python -m pip install crnn cython setuptools
    python setup.py build_ext --inplace       # or: python -m pip install .

``crnn.get_include()`` is the folder of crnn.h; Cython finds crnn/api.pxd on sys.path;
at run time the extension imports ``crnn.api`` and calls into it (no linking
against crnn is needed: Cython passes the functions through a capsule).
"""
import crnn
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension("crnn_downstream", ["crnn_downstream.pyx"],
              include_dirs=[crnn.get_include()]),
]

# Metadata is in pyproject.toml; this file only builds the extension.
setup(ext_modules=cythonize(extensions, include_path=[crnn.get_include()],
                            compiler_directives={"language_level": 3}))
