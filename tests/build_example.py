"""Build one of examples/' downstream packages against the installed crnn,
in a temporary directory, and import it (for test_capi.py and
test_c_header.py).  Without Cython (for a .pyx), setuptools or a C
compiler the calling test skips, saying which is missing."""
import importlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig

import pytest


def missing_build_tool(example, files, cython):
    """Why the package cannot be built here, or None."""
    if cython:
        try:
            import Cython  # noqa: F401
        except ImportError:
            return f"Cython is not installed (pip install cython) to build {example.name}"
    try:
        import setuptools  # noqa: F401
    except ImportError:
        return f"setuptools is not installed (pip install setuptools) to build {example.name}"
    if not all((example / name).is_file() for name in files):
        return f"the example package is not beside the tests ({example})"
    if os.name == "posix":
        compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")[0]
        if shutil.which(compiler) is None:
            return f"no C compiler ({compiler}) to build {example.name}"
    return None


def build_example(example, files, module, build, cython):
    """``python setup.py build_ext --inplace`` of `files` of `example`,
    copied into `build`; returns the imported `module`."""
    reason = missing_build_tool(example, files, cython)
    if reason:
        pytest.skip(reason)
    for name in files:
        shutil.copy(example / name, build / name)
    result = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=build,
        capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"building {example.name} against the installed crnn "
                    f"failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    sys.path.insert(0, str(build))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(build))
