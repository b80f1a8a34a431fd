"""Data-parallel training over MPI (issue 18): real ``mpiexec`` processes.

The acceptance test: N ranks with global batch B give the weights and the
History of one process with batch B — float64 to 1e-12 relative, float32 to
the rounding of another summation order (1e-5 of the largest weight; 6e-7
measured) — for 1, 2 and 3 ranks, every cell, ragged lengths, bptt,
validation, early stopping and callback stops.  Every mpiexec runs under a
timeout, so a hang fails the test instead of eating CI's time.  Skips
without mpi4py or an ``mpiexec``.
"""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import crnn
import distributed_cases

mpi4py = pytest.importorskip("mpi4py", reason="needs mpi4py: pip install \"crnn[mpi]\"")

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "mpi_worker.py")
TIMEOUT = 240


def mpiexec():
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.path.exists(beside) else shutil.which("mpiexec")
    if found is None:
        pytest.skip("needs an mpiexec (pip install mpich, or an MPI library)")
    return found


def environment():
    env = dict(os.environ)
    # one BLAS and one crnn thread per rank: ranks are the parallelism
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", CRNN_NUM_THREADS="1")
    return env


def launch(ranks, out, *args, expect_ok=True, timeout=TIMEOUT):
    """Run tests/mpi_worker.py on `ranks` processes; the completed process."""
    command = [mpiexec(), "-n", str(ranks), sys.executable, WORKER, str(out), *args]
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=timeout, env=environment())
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"mpiexec -n {ranks} {' '.join(args)} hung for {timeout} s:\n"
                    f"{expired.stdout}\n{expired.stderr}")
    if expect_ok:
        assert done.returncode == 0, f"mpiexec failed:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def references():
    """Every case trained in this process, comm=None, one crnn thread."""
    previous = crnn.get_num_threads()
    crnn.set_num_threads(1)
    try:
        return {name: distributed_cases.summary(*case(None, 0))
                for name, case in distributed_cases.CASES.items()}
    finally:
        crnn.set_num_threads(previous)


_runs = {}


def run_cases(ranks, tmp_path_factory):
    """All cases in one mpiexec -n `ranks` (a launch costs seconds)."""
    if ranks not in _runs:
        out = tmp_path_factory.mktemp(f"ranks{ranks}")
        launch(ranks, out, "cases", *distributed_cases.CASES)
        _runs[ranks] = {
            name: [dict(np.load(out / f"{name}.rank{r}.npz")) for r in range(ranks)]
            for name in distributed_cases.CASES}
    return _runs[ranks]


def assert_same_run(result, reference, parameter_tolerance, history_tolerance):
    assert set(result) == set(reference)
    for key, expected in reference.items():
        got = result[key]
        assert got.shape == expected.shape, key
        if key.startswith("param/"):
            error = np.abs(got.astype(np.float64) - expected).max()
            assert error <= parameter_tolerance * np.abs(expected).max(), (key, error)
        elif expected.dtype.kind == "f":
            np.testing.assert_allclose(got, expected, rtol=history_tolerance,
                                       atol=0, err_msg=key)
        else:
            np.testing.assert_array_equal(got, expected, err_msg=key)


@pytest.mark.parametrize("ranks", [1, 2, 3])
@pytest.mark.parametrize("case", sorted(distributed_cases.CASES))
def test_n_ranks_train_what_one_process_trains(case, ranks, references,
                                               tmp_path_factory):
    results = run_cases(ranks, tmp_path_factory)[case]
    # the replicas stay bit-identical: every rank applies the same update
    for other in results[1:]:
        for key in results[0]:
            np.testing.assert_array_equal(other[key], results[0][key], err_msg=key)
    if case == "lstm_float32":
        assert_same_run(results[0], references[case], 1e-5, 1e-5)
    else:
        assert_same_run(results[0], references[case], 1e-12, 1e-12)


def test_the_cases_test_what_they_claim(references):
    """The runs are not trivially equal: early stopping and the callback
    stop happened, and training moved the weights."""
    assert references["rnn_ragged"]["history/stopped_epoch"] >= 0
    assert references["gru_many_to_one"]["history/best_epoch"] >= 0
    stop = references["rnn_callback_stop"]
    assert stop["history/stopped_epoch"] == 1
    assert stop["optimizer/step"] == 5 + 3       # one epoch of 5 steps, then 3


def test_replicas_built_with_different_seeds_start_from_rank_0(tmp_path_factory):
    results = run_cases(2, tmp_path_factory)["rnn_ragged"]
    # the model on rank 1 was built with seed 11, rank 0's with seed 10: the
    # broadcast at the start of fit made them one
    assert np.array_equal(results[0]["param/W0"], results[1]["param/W0"])


# ------------------------------------------------------------ faults

def read_errors(out, job, ranks):
    errors = []
    for r in range(ranks):
        with open(out / f"{job}.rank{r}.err") as handle:
            kind, _, message = handle.read().partition("\n")
        errors.append((kind, message))
    return errors


def test_a_rank_that_raises_mid_epoch_stops_every_rank(tmp_path):
    launch(3, tmp_path, "fail", "1")
    errors = read_errors(tmp_path, "fail", 3)
    assert errors[1][0] == "MemoryError"
    assert errors[1][1].startswith("rank 1 of 3: simulated")
    for kind, message in (errors[0], errors[2]):
        assert kind == "RankError"
        assert "rank 1 of 3: MemoryError: simulated" in message


def test_a_callback_error_on_one_rank_is_raised_on_all(tmp_path):
    launch(2, tmp_path, "raise-callback", "1")
    errors = read_errors(tmp_path, "raise-callback", 2)
    assert [kind for kind, _ in errors] == ["ValueError", "ValueError"]
    assert all("rank 1 of 2" in message and "a callback failed" in message
               for _, message in errors)


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    launch(2, tmp_path, "nan")
    errors = read_errors(tmp_path, "nan", 2)
    assert errors[0] == errors[1]          # same type, same epoch and batch
    kind, message = errors[0]
    assert kind == "NonFiniteError"
    assert "at epoch 2 of 3, batch 4 of 4" in message
    assert "keeps the weights from before this batch" in message


def test_different_arguments_are_refused_before_training(tmp_path):
    launch(3, tmp_path, "mismatch", "2")
    errors = read_errors(tmp_path, "mismatch", 3)
    for kind, message in errors:
        assert kind == "ValueError"
        assert "rank 2 of 3 was given epochs = 3, rank 0 2" in message


def test_resume_from_another_model_shape_names_rank_0(tmp_path):
    other = crnn.LSTM(3, 9, 4, seed=0)       # hidden 9, the job's model has 6
    X, y, lengths, _ = distributed_cases.resume_data()
    trainer = crnn.Trainer(other, batch_size=5, seed=0)
    trainer.fit(X, y, lengths, epochs=1, verbose=0,
                checkpoint=str(tmp_path / "other.npz"))
    launch(2, tmp_path, "bad-resume", str(tmp_path / "other.npz"))
    for kind, message in read_errors(tmp_path, "bad-resume", 2):
        assert kind == "ValueError"
        assert "rank 0 of 2" in message and "same shape" in message


def test_a_communicator_is_checked_at_construction():
    model = crnn.RNN(2, 3, 2, seed=0)
    with pytest.raises(TypeError, match="comm must be an MPI communicator.*got "
                                        "str, which has no rank, size, Allreduce, Bcast"):
        crnn.Trainer(model, comm="COMM_WORLD")
    from mpi4py import MPI
    trainer = crnn.Trainer(model, comm=MPI.COMM_SELF)
    assert (trainer.rank, trainer.size) == (0, 1)


# ------------------------------------------------------------ resume

def test_resume_under_mpi_equals_training_straight(tmp_path):
    launch(2, tmp_path, "resume", str(tmp_path / "checkpoint.npz"))
    for rank in range(2):
        straight = dict(np.load(tmp_path / f"straight.rank{rank}.npz"))
        resumed = dict(np.load(tmp_path / f"resumed.rank{rank}.npz"))
        assert_same_run(resumed, straight, 1e-12, 1e-12)
    assert straight["optimizer/step"] > 20


def test_only_rank_0_prints_unless_asked(tmp_path):
    quiet = launch(3, tmp_path, "verbose")
    assert quiet.stderr.count("Epoch 1/2") == 1 and quiet.stderr.count("Epoch 2/2") == 1
    loud = launch(3, tmp_path, "verbose", "all")
    assert loud.stderr.count("Epoch 1/2") == 3 and loud.stderr.count("Epoch 2/2") == 3
