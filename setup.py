"""Build crnn's Cython extensions.  Metadata lives in pyproject.toml."""
from pathlib import Path

import numpy
import scipy
from Cython.Build import cythonize
from setuptools import Extension, setup

PACKAGE = Path("src") / "crnn"

# Cython directives, set once for every module: kernels trust their arguments
# (the Python facade validates everything before calling them).
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
}


def write_blas_int_pxi():
    """SciPy >= 1.18 types BLAS integers as ``blas_int``; older ones use ``int``.

    Generate a one-line include so ``_blas.pxd`` compiles against both.
    """
    scipy_pxd = Path(scipy.__file__).parent / "linalg" / "cython_blas.pxd"
    if "blas_int" in scipy_pxd.read_text():
        line = "from scipy.linalg.cython_blas cimport blas_int\n"
    else:
        line = "ctypedef int blas_int\n"
    target = PACKAGE / "_blas_int.pxi"
    if not target.exists() or target.read_text() != line:
        target.write_text(line)


write_blas_int_pxi()

MODULES = ["_blas", "_cells", "_loss", "_sequence", "_stream"]
extensions = [
    Extension(
        f"crnn.{name}",
        [str(PACKAGE / f"{name}.pyx")],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"] if not __import__("sys").platform.startswith("win") else ["/O2"],
    )
    for name in MODULES
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))
