"""``crnn train`` under MPI and ``--resume`` (issue 18), with real mpiexec
processes under timeouts.  The MPI tests skip without mpi4py or mpiexec;
the resume and missing-mpi4py tests run everywhere."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import crnn
from crnn import cli
from crnn import io as crnn_io

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}.\n"
               for i in range(400))
FAST = ["--hidden", "16", "--seq-length", "8", "--chunks", "2", "--batch-size", "6",
        "--max-chars", "6000", "--quiet", "--sample-length", "0"]


def mpi_environment():
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", CRNN_NUM_THREADS="1")
    return env


def mpiexec():
    pytest.importorskip("mpi4py", reason='needs mpi4py: pip install "crnn[mpi]"')
    found = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(found):
        import shutil
        found = shutil.which("mpiexec")
    if found is None:
        pytest.skip("needs an mpiexec (pip install mpich, or an MPI library)")
    return found


def crnn_script():
    return os.path.join(os.path.dirname(sys.executable), "crnn")


@pytest.fixture
def textfile(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def params(path):
    return crnn.load(str(path)).params


def train_here(textfile, *arguments, out=None):
    """``crnn train TEXTFILE FAST... ARGUMENTS`` in this process with crnn at
    one thread (as each MPI rank runs); its exit status."""
    previous = crnn.get_num_threads()
    crnn.set_num_threads(1)
    try:
        with open(os.devnull, "w") as devnull:
            return cli.main(["train", str(textfile), *FAST, *map(str, arguments)],
                            out=out or devnull)
    finally:
        crnn.set_num_threads(previous)


# ------------------------------------------------------------ resume, alone

def test_resume_continues_exactly_where_the_checkpoint_stopped(textfile, tmp_path):
    straight, part = tmp_path / "straight.npz", tmp_path / "part.npz"
    assert train_here(textfile, "--epochs", "4", "--model", straight) == 0
    assert train_here(textfile, "--epochs", "2", "--model", part) == 0
    assert crnn_io.load_checkpoint(str(part))["epoch"] == 2
    with open(tmp_path / "log.txt", "w") as out:
        assert train_here(textfile, "--epochs", "4", "--resume", part, out=out) == 0
    log = (tmp_path / "log.txt").read_text()
    assert "resuming" in log and "after epoch 2 of 4" in log
    assert "epoch 3:" in log and "epoch 1:" not in log
    resumed = crnn_io.load_checkpoint(str(part))
    assert resumed["epoch"] == 4
    # one process, one thread: bit for bit what 4 epochs straight give
    for name, value in params(straight).items():
        np.testing.assert_array_equal(resumed["model"].params[name], value, err_msg=name)
    bits = resumed["extra"]["bits_per_char"]["train"]
    assert bits == crnn_io.load_checkpoint(str(straight))["extra"]["bits_per_char"]["train"]


def test_fit_resume_equals_training_straight(tmp_path):
    import distributed_cases
    straight, history = distributed_cases.resume_case(None, 0, epochs=8)
    distributed_cases.resume_case(None, 0, epochs=4, checkpoint=str(tmp_path / "c.npz"))
    resumed, resumed_history = distributed_cases.resume_case(
        None, 0, epochs=8, resume_from=str(tmp_path / "c.npz"), model_seed=99)
    for name, value in straight.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value, err_msg=name)
    assert resumed_history.epoch == history.epoch == list(range(8))
    assert resumed_history.history["val_loss"] == history.history["val_loss"]
    assert resumed.optimizer.steps == straight.optimizer.steps == 8 * 5


def test_resume_from_a_plain_model_file_is_refused(tmp_path):
    model = crnn.LSTM(3, 6, 4, seed=0)
    model.save(str(tmp_path / "plain.npz"))
    X = np.zeros((4, 5, 3))
    y = np.zeros((4, 5), dtype=int)
    with pytest.raises(ValueError, match="without the trainer's state"):
        crnn.Trainer(model).fit(X, y, resume_from=str(tmp_path / "plain.npz"), verbose=0)
    with pytest.raises(TypeError, match="resume_from must be a path"):
        crnn.Trainer(model).fit(X, y, resume_from=3, verbose=0)


def test_resume_from_another_shape_is_refused(tmp_path):
    X = np.zeros((4, 5, 3))
    y = np.zeros((4, 5), dtype=int)
    crnn.Trainer(crnn.LSTM(3, 8, 4, seed=0)).fit(
        X, y, verbose=0, checkpoint=str(tmp_path / "c.npz"))
    model = crnn.LSTM(3, 6, 4, seed=0)
    before = model.params["W0"].copy()
    with pytest.raises(ValueError, match=r"holds LSTM\(3, 8, 4.*the trainer's model is "
                                         r"LSTM\(3, 6, 4.*same shape"):
        crnn.Trainer(model).fit(X, y, resume_from=str(tmp_path / "c.npz"), verbose=0)
    assert np.array_equal(model.params["W0"], before)


# ------------------------------------------------------------ under MPI

def test_missing_mpi4py_under_a_launcher_names_the_extra(textfile, tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None; from crnn.cli import main; "
            f"sys.exit(main(['train', {str(textfile)!r}, '--model', "
            f"{str(tmp_path / 'm.npz')!r}]))")
    env = dict(os.environ, PMI_RANK="0", PMI_SIZE="2")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    assert 'pip install "crnn[mpi]"' in done.stderr
    assert "one of 2 processes" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m.npz").exists()


def test_mpiexec_crnn_train_is_one_process_training(textfile, tmp_path):
    launcher = mpiexec()
    alone, together = tmp_path / "alone.npz", tmp_path / "together.npz"
    assert train_here(textfile, "--epochs", "2", "--model", alone) == 0
    done = subprocess.run([launcher, "-n", "2", crnn_script(), "train", str(textfile),
                           *FAST, "--epochs", "2", "--model", str(together)],
                          capture_output=True, text=True, timeout=240,
                          env=mpi_environment())
    assert done.returncode == 0, done.stderr
    # rank 0 alone speaks and writes
    assert done.stdout.count("epoch 1:") == 1 and done.stdout.count("epoch 2:") == 1
    assert "data-parallel over 2 MPI processes" in done.stdout
    assert sorted(os.listdir(tmp_path)) == ["alone.npz", "text.txt", "together.npz"]
    assert crnn_io.load_checkpoint(str(together))["epoch"] == 2
    # float32: another summation order, measured ~1e-6 of the largest weight
    for name, value in params(alone).items():
        error = np.abs(params(together)[name] - value).max()
        assert error <= 1e-4 * np.abs(value).max(), (name, error)


def test_a_killed_rank_ends_the_job_and_resume_continues(textfile, tmp_path):
    launcher = mpiexec()
    model = tmp_path / "m.npz"
    runs = tmp_path / "runs"
    runs.mkdir()
    argv = ["train", str(textfile), *FAST, "--hidden", "48", "--model", str(model)]
    job = subprocess.Popen([launcher, "-n", "2", sys.executable,
                            os.path.join(HERE, "mpi_cli.py"), str(runs), *argv,
                            "--epochs", "200"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=mpi_environment())
    try:
        deadline = time.monotonic() + 180
        while not model.exists():
            assert job.poll() is None, job.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
        victim = int((runs / "pid.rank1").read_text())
        os.kill(victim, signal.SIGKILL)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode != 0
    saved = crnn_io.load_checkpoint(str(model))      # the last checkpoint loads
    epoch = saved["epoch"]
    assert 1 <= epoch < 200
    done = subprocess.run([launcher, "-n", "2", crnn_script(), *argv,
                           "--epochs", str(epoch + 1), "--resume", str(model)],
                          capture_output=True, text=True, timeout=240,
                          env=mpi_environment())
    assert done.returncode == 0, done.stderr
    assert f"after epoch {epoch} of {epoch + 1}" in done.stdout
    assert f"epoch {epoch + 1}:" in done.stdout
    assert crnn_io.load_checkpoint(str(model))["epoch"] == epoch + 1
