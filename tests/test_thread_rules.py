"""The thread team in the wild (issue 20): how many threads, and BLAS.

- the default thread count: the CPUs this process may use divided by the
  processes of its job on this node (launchers' variables; a
  communicator's shared-memory split under ``Trainer(comm=...)``, tested
  with real ``mpiexec -n 2``), overridden by CRNN_NUM_THREADS;
- the cost model's thread limit per job, against its closed form;
- the team itself: tests/c/team_test.c built with the C compiler and run
  (parts on disjoint ranges, joins, late workers sending the caller solo);
- BLAS held at one thread through threadpoolctl: numpy's and SciPy's
  OpenBLAS, and a clear fallback when SciPy's BLAS has no thread controls.
"""
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import crnn
from crnn import _parallel, threads
from crnn.threads import available_cpus, default_num_threads, ranks_on_this_node

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture
def restore_threads():
    before = crnn.get_num_threads()
    yield
    crnn.set_num_threads(before)


# ------------------------------------------------------------ the default

@pytest.mark.parametrize("environ,ranks", [
    ({"MPI_LOCALNRANKS": "2"}, 2),                            # MPICH's Hydra, Intel MPI
    ({"OMPI_COMM_WORLD_LOCAL_SIZE": "3"}, 3),                 # Open MPI
    ({"PMIX_LOCAL_SIZE": "4"}, 4),                            # PMIx
    ({"MV2_COMM_WORLD_LOCAL_SIZE": "5"}, 5),                  # MVAPICH2
    ({"MPI_LOCALNRANKS": "x", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, 2),
    ({"SLURM_STEP_ID": "0", "SLURM_NODEID": "1",
      "SLURM_STEP_TASKS_PER_NODE": "3(x2),1"}, 3),
    ({"SLURM_STEP_ID": "0", "SLURM_NODEID": "2",
      "SLURM_STEP_TASKS_PER_NODE": "3(x2),1"}, 1),
    ({"SLURM_STEPID": "4", "SLURM_NODEID": "0", "SLURM_TASKS_PER_NODE": "6"}, 6),
    ({"SLURM_STEP_ID": "0", "SLURM_NTASKS_PER_NODE": "8"}, 8),
    # a batch script's shell is not a task of a step: no division
    ({"SLURM_TASKS_PER_NODE": "4", "SLURM_NTASKS_PER_NODE": "4"}, 1),
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_TASKS_PER_NODE": "garbage"}, 1),
    ({}, 1),
])
def test_ranks_on_this_node_from_the_launchers(environ, ranks):
    assert ranks_on_this_node(environ) == ranks
    assert default_num_threads(environ) == max(1, available_cpus() // ranks)


def test_crnn_num_threads_overrides_the_ranks():
    assert default_num_threads({"CRNN_NUM_THREADS": "3", "MPI_LOCALNRANKS": "64"}) == 3
    assert default_num_threads({"OMP_NUM_THREADS": "2", "MPI_LOCALNRANKS": "64"}) == 2
    assert default_num_threads({"MPI_LOCALNRANKS": "64"}) == 1        # at least one
    assert default_num_threads({}, ranks=1) == available_cpus()


def test_share_node_leaves_a_chosen_count_alone(restore_threads):
    class Comm:                         # never asked: the count was chosen
        def Split_type(self, kind):
            raise AssertionError("split asked although the count was chosen")
    crnn.set_num_threads(3)
    assert threads.share_node(Comm()) == 3
    assert threads.share_node(Comm(), environ={"CRNN_NUM_THREADS": "2"}) == 3
    assert threads.share_node(object()) == 3        # no Split_type: nothing to ask


PROBE = """
import os
import sys
import crnn
from mpi4py import MPI
at_import = crnn.get_num_threads()
if "CRNN_NUM_THREADS" not in os.environ:
    # undo the launcher's rule (not a user's choice), so that the count
    # after Trainer comes from the communicator's shared-memory split alone
    crnn._parallel.set_num_threads(crnn.threads.available_cpus())
model = crnn.LSTM(3, 4, 2, seed=0)
crnn.Trainer(model, batch_size=4, comm=MPI.COMM_WORLD)
with open(f"{sys.argv[1]}/rank{MPI.COMM_WORLD.rank}", "w") as out:
    out.write(f"{at_import} {crnn.get_num_threads()}")
"""


def run_ranks(tmp_path, ranks, **variables):
    """`ranks` processes of PROBE under mpiexec; {rank: (threads at import,
    threads after Trainer(comm=...))}."""
    pytest.importorskip("mpi4py", reason="needs mpi4py: pip install \"crnn[mpi]\"")
    from test_distributed import mpiexec
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items()
           if k not in ("CRNN_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    env.update(variables)
    done = subprocess.run([mpiexec(), "-n", str(ranks), sys.executable, str(script),
                           str(tmp_path)], capture_output=True, text=True, timeout=180,
                          env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return {rank: tuple(map(int, (tmp_path / f"rank{rank}").read_text().split()))
            for rank in range(ranks)}


def test_two_ranks_on_this_node_share_its_cpus(tmp_path):
    """mpiexec -n 2: each rank half of this machine's CPUs (1 on 2 CPUs), from
    the launcher's variables at import and from the communicator's
    shared-memory split under Trainer(comm=...)."""
    share = max(1, available_cpus() // 2)
    assert run_ranks(tmp_path, 2) == {0: (share, share), 1: (share, share)}


def test_crnn_num_threads_overrides_under_mpi(tmp_path):
    assert run_ranks(tmp_path, 2, CRNN_NUM_THREADS="3") == {0: (3, 3), 1: (3, 3)}


# ------------------------------------------------------ the cost model

@pytest.mark.parametrize("work", [0, 1, 2.0 ** 18 - 1, 2.0 ** 18, 3 * 2.0 ** 18 - 1,
                                  3 * 2.0 ** 18, 1e6, 2.6e6, 7.3e6, 3.1e7, 1e12])
def test_the_thread_limit_is_where_another_thread_stops_gaining(work):
    """t·(t-1)/2 <= W / MIN_WORK (MIN_WORK = 2^18 multiply-adds): the
    largest such t, capped by the threads wanted and by 16."""
    closed = math.floor((1 + math.sqrt(1 + 8 * work / 2 ** 18)) / 2)
    assert _parallel._gain_limit(work) == min(closed, 16)
    for most in (1, 2, 3, 8):
        assert _parallel._gain_limit(work, most) == min(closed, most)
    # a t-th thread gains: W/(t-1) - W/t >= h = MIN_WORK/2 (in multiply-adds)
    limit = _parallel._gain_limit(work)
    if 1 < limit:
        assert work / (limit - 1) - work / limit >= 2 ** 18 / 2
    if limit < 16:
        assert work / limit - work / (limit + 1) < 2 ** 18 / 2


def build_team_test(build):
    """tests/c/team_test.c compiled by the compiler setuptools finds (GCC or
    Clang; MSVC on Windows, where the wheels' tests run it); its path."""
    header = os.path.join(ROOT, "src", "crnn", "_team.h")
    if not os.path.isfile(header):
        pytest.skip("src/crnn/_team.h is not beside the tests")
    ccompiler = pytest.importorskip("setuptools._distutils.ccompiler")
    from setuptools._distutils.sysconfig import customize_compiler
    compiler = ccompiler.new_compiler()
    msvc = compiler.compiler_type == "msvc"
    if not msvc:
        customize_compiler(compiler)
        if shutil.which(compiler.compiler[0]) is None:
            pytest.skip(f"no C compiler ({compiler.compiler[0]})")
    objects = compiler.compile(
        [os.path.join(HERE, "c", "team_test.c")], output_dir=str(build),
        include_dirs=[os.path.dirname(header)],
        macros=[] if msvc else [("_POSIX_C_SOURCE", "200809L")],
        extra_preargs=["/std:c11"] if msvc else ["-std=c11"])
    compiler.link_executable(objects, "team_test", output_dir=str(build),
                             libraries=[] if msvc else ["pthread", "m"])
    return os.path.join(str(build), compiler.executable_filename("team_test"))


def test_the_team_in_c(tmp_path):
    """tests/c/team_test.c: parts on disjoint ranges for 1-16 threads and
    parts, two callers, late workers, the limit, shutdown (natively here;
    tools/team_test.sh also builds it with MinGW and runs it under Wine)."""
    done = subprocess.run([build_team_test(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "team test: all passed" in done.stdout, done.stdout


def test_team_counts_add_up(restore_threads):
    """Every multi-part job the team takes is either posted or run solo."""
    crnn.set_num_threads(2)
    model = crnn.LSTM(8, 64, 5, seed=0)
    X = np.random.default_rng(0).standard_normal((16, 12, 8)).astype(np.float32)
    _parallel._team_counts(reset=True)
    model.forward(X)
    counts = _parallel._team_counts(reset=True)
    assert counts["jobs"] + counts["solo_jobs"] >= 12          # a job a step at least
    assert counts["late_jobs"] <= counts["jobs"]
    crnn.set_num_threads(1)
    model.forward(X)
    assert _parallel._team_counts()["jobs"] == 0               # one thread: no team


# ---------------------------------------------------------------- BLAS

def test_numpy_and_scipy_openblas_are_both_found():
    import numpy
    import scipy
    files = {os.path.basename(c.filepath): c for c in threads._blas_controls().controllers}
    openblas = [name for name in files if "openblas" in name]
    wheels = [os.path.dirname(numpy.__file__) + ".libs",
              os.path.dirname(scipy.__file__) + ".libs"]
    if not all(os.path.isdir(folder) for folder in wheels):
        pytest.skip("numpy and SciPy are not the PyPI wheels with their own OpenBLAS")
    assert len(openblas) >= 2, files
    status = threads.blas_status()
    assert status["held"] and status["api"] == "openblas"
    assert os.path.dirname(scipy.__file__) + ".libs" in status["library"]
    assert any(os.path.dirname(numpy.__file__) + ".libs" in other
               for other in status["others"])


class FakeBlas:
    """A BLAS library's thread controls, as threadpoolctl's controller."""

    def __init__(self, filepath, internal_api="openblas"):
        self.filepath, self.internal_api, self.threads = filepath, internal_api, 4

    def get_num_threads(self):
        return self.threads

    def set_num_threads(self, threads):
        self.threads = threads


@pytest.fixture
def fake_controls(monkeypatch):
    def install(controllers, folders=("/nowhere/scipy/",)):
        controls = threads._BlasControls(controllers, folders)
        monkeypatch.setattr(threads, "_controls", controls)
        return controls
    return install


def test_no_blas_controls_is_a_clear_fallback(fake_controls, restore_threads):
    """SciPy's BLAS unknown (Accelerate, a reference BLAS, a library that
    could not be found): nothing held, no split, same results."""
    fake_controls([])
    status = threads.blas_status()
    assert status["held"] is False and status["library"] is None
    assert "no thread controls" in status["reason"]
    crnn.set_num_threads(2)
    with threads.single_threaded_blas():
        assert _parallel.split_gemms(False) is False     # the products not split
    model = crnn.GRU(6, 40, 3, seed=1)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((8, 9, 6)).astype(np.float32), rng.integers(0, 3, (8, 9))
    two = model.loss_and_grad(X, y)
    crnn.set_num_threads(1)
    one = model.loss_and_grad(X, y)
    assert two[0] == one[0]
    for name in one[1]:
        np.testing.assert_array_equal(two[1][name], one[1][name])


def test_other_blas_held_but_scipy_unknown_splits_nothing(fake_controls, restore_threads):
    """Two BLAS libraries, neither in SciPy's folders: both held at one
    thread during the call (and restored), but SciPy's own is not known to
    be among them, so crnn does not split the products."""
    first, second = FakeBlas("/opt/a/libopenblas.so"), FakeBlas("/opt/b/libmkl_rt.so", "mkl")
    fake_controls([first, second])
    assert threads.blas_status()["held"] is False
    crnn.set_num_threads(2)
    with threads.single_threaded_blas():
        assert (first.threads, second.threads) == (1, 1)
        assert _parallel.split_gemms(False) is False
    assert (first.threads, second.threads) == (4, 4)


def test_scipy_blas_found_in_its_folder_or_alone(fake_controls, restore_threads):
    ours = FakeBlas("/site/scipy.libs/libscipy_openblas.so")
    other = FakeBlas("/site/numpy.libs/libscipy_openblas64_.so")
    controls = fake_controls([other, ours], folders=("/site/scipy/", "/site/scipy.libs/"))
    assert controls.crnn_blas is ours
    crnn.set_num_threads(2)
    with threads.single_threaded_blas():
        assert (ours.threads, other.threads) == (1, 1)
        assert _parallel.split_gemms(True) is True        # split while held
    assert (ours.threads, other.threads) == (4, 4)
    alone = FakeBlas("/usr/lib/libopenblas.so.0")          # conda, a distribution
    assert fake_controls([alone]).crnn_blas is alone


def test_threadpoolctl_failing_is_a_fallback(monkeypatch, restore_threads):
    """threadpoolctl raising (a loader it cannot read): no controls, a
    reason naming it, and calls still run."""
    from crnn._vendor import threadpoolctl

    def broken():
        raise OSError("simulated: the loader's list cannot be read")
    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", broken)
    controls = threads._BlasControls.find()
    assert controls.controllers == [] and controls.crnn_blas is None
    monkeypatch.setattr(threads, "_controls", controls)
    status = threads.blas_status()
    assert not status["held"] and "threadpoolctl failed" in status["reason"]
    crnn.set_num_threads(2)
    model = crnn.LSTM(4, 32, 3, seed=0)
    X = np.random.default_rng(0).standard_normal((4, 6, 4)).astype(np.float32)
    forward_two = model.forward(X)
    crnn.set_num_threads(1)
    np.testing.assert_array_equal(forward_two, model.forward(X))
