"""Build a downstream C extension against crnn's C header.

    python -m pip install crnn setuptools
    python setup.py build_ext --inplace       # or: python -m pip install .

``crnn.get_include()`` is the folder of ``crnn.h``.  Nothing is linked
against crnn: at import the extension calls ``crnn_import()``, which takes
the function table from the capsule ``crnn.api._C_API``.
"""
import crnn
from setuptools import Extension, setup

setup(ext_modules=[Extension("crnn_downstream_c", ["crnn_downstream_c.c"],
                             include_dirs=[crnn.get_include()])])
