"""Build crnn's Cython extensions.  Metadata lives in pyproject.toml."""
import sys
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

# Release builds carry no debug information (Python's own CFLAGS often hold
# -g): -g0 drops it, -s strips the linked module (GNU ld).  MSVC's /O2 makes
# no debug info unless asked.  -fno-trapping-math lets GCC/Clang vectorise the
# cell kernels' branch-free float32 tanh/sigmoid (_fastmath.h), and
# -fno-math-errno the optimizers' sqrt (_optim.pyx: 5x faster); crnn never
# reads floating-point exception flags or errno, and results are unchanged.
if sys.platform.startswith("win"):
    COMPILE_ARGS, LINK_ARGS = ["/O2"], []
elif sys.platform.startswith("linux"):
    COMPILE_ARGS = ["-O3", "-g0", "-fno-trapping-math", "-fno-math-errno"]
    LINK_ARGS = ["-s"]
else:
    COMPILE_ARGS = ["-O3", "-g0", "-fno-trapping-math", "-fno-math-errno"]
    LINK_ARGS = []

# Bottom-up: the BLAS shim, the parallel module, the cell table, the plan,
# a step on the team, the lane, the output layer and loss, the network, the
# stream, the optimizers; api: the public C-level API (api.pxd, crnn.h).
MODULES = ["_blas", "_parallel", "_cells", "_plan", "_step", "_lane", "_loss",
           "_call", "_network", "_stream", "_optim", "api"]
extensions = [
    Extension(
        f"crnn.{name}",
        [str(PACKAGE / f"{name}.pyx")],
        include_dirs=[numpy.get_include()],
        depends=[str(path) for path in sorted(PACKAGE.glob("_*.h"))],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=COMPILE_ARGS,
        extra_link_args=LINK_ARGS,
    )
    for name in MODULES
]

setup(ext_modules=cythonize(extensions, compiler_directives=DIRECTIVES))
