"""crnn.Trainer: learning, evaluation, early stopping, clipping, the NaN
guard, Ctrl-C, determinism, truncated BPTT, callbacks, progress output,
bucketing, resuming, and argument checks.

Every task is tiny (a few hundred short sequences, a few epochs) so the
whole file runs in seconds.
"""
import contextlib
import io
import os
import signal
import sys

import numpy as np
import pytest

import crnn
from crnn import optim
from crnn.trainer import NonFiniteError


# ------------------------------------------------------------------ data

def delay_task(n=128, steps=10, vocab=4, seed=0):
    """Tokens; the target at t is the token at t - 1 (0 at t = 0)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, vocab, size=(n, steps))
    y = np.roll(X, 1, axis=1)
    y[:, 0] = 0
    return X, y


def sign_task(n=256, seed=1):
    """Ragged list of (T_i, 1) floats; class 1 when the sum is positive."""
    rng = np.random.default_rng(seed)
    X = [rng.normal(size=(length, 1)) for length in rng.integers(3, 9, size=n)]
    y = np.array([int(x.sum() > 0) for x in X])
    return X, y


def snapshot(model):
    return {name: value.copy() for name, value in model.params.items()}


def assert_params_equal(params, expected):
    assert set(params) == set(expected)
    for name in params:
        np.testing.assert_array_equal(params[name], expected[name], err_msg=name)


def params_differ(a, b):
    return any(not np.array_equal(a[name], b[name]) for name in a)


class Recorder:
    """Snapshots the weights after every step and every epoch."""

    def __init__(self, model):
        self.model = model
        self.after_step = []
        self.after_epoch = []

    def on_batch_end(self, batch, logs):
        self.after_step.append(snapshot(self.model))

    def on_epoch_end(self, epoch, logs):
        self.after_epoch.append(snapshot(self.model))


# ------------------------------------------------------------------ learning

@pytest.mark.parametrize("optimizer, lr", [
    ("sgd", 3.0), ("momentum", 0.3), ("adam", 0.02), ("rmsprop", 0.01), ("adagrad", 0.1),
])
def test_each_optimizer_learns_a_token_task(optimizer, lr):
    X, y = delay_task()
    model = crnn.LSTM(4, 16, 4, seed=0)
    trainer = crnn.Trainer(model, optimizer, lr=lr, batch_size=16, seed=0)
    history = trainer.fit(X, y, epochs=8, verbose=0)
    loss, accuracy = history.history["loss"], history.history["accuracy"]
    assert len(loss) == len(accuracy) == 8
    assert loss[-1] < 0.8 * loss[0]
    assert accuracy[-1] > accuracy[0] + 0.15
    assert trainer.optimizer.steps == 8 * 8


def test_adam_solves_the_token_task_with_validation():
    X, y = delay_task()
    Xv, yv = delay_task(n=64, seed=9)
    model = crnn.GRU(4, 16, 4, seed=0)
    trainer = crnn.Trainer(model, "adam", lr=0.03, batch_size=16, seed=0)
    history = trainer.fit(X, y, epochs=8, validation_data=(Xv, yv), verbose=0)
    h = history.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy", "time"}
    assert h["val_loss"][-1] < 0.2 * h["val_loss"][0]
    assert h["val_accuracy"][-1] > 0.95 > h["val_accuracy"][0]
    assert all(t > 0 for t in h["time"])
    assert history.epoch == list(range(8))


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_many_to_one_softmax_on_ragged_lists(kind):
    X, y = sign_task()
    model = getattr(crnn, kind)(1, 8, 2, return_sequences=False, seed=0)
    trainer = crnn.Trainer(model, "adam", lr=0.03, batch_size=16, seed=0)
    history = trainer.fit(X, y, epochs=6, verbose=0)
    assert history.history["accuracy"][-1] > 0.85
    assert history.history["loss"][-1] < 0.6 * history.history["loss"][0]
    assert trainer.evaluate(X, y)["accuracy"] > 0.85


def test_many_to_one_linear_regression():
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, size=(256, 6, 2))
    y = X.sum(axis=(1, 2))                      # (N,): the trailing K = 1 left out
    model = crnn.GRU(2, 8, 1, output="linear", return_sequences=False, seed=0)
    trainer = crnn.Trainer(model, "adam", lr=0.03, batch_size=16, seed=0)
    history = trainer.fit(X, y, epochs=8, validation_data=(X[:64], y[:64]), verbose=0)
    assert set(history.history) == {"loss", "val_loss", "time"}
    assert history.history["loss"][-1] < 0.05 * history.history["loss"][0]
    assert set(trainer.evaluate(X, y)) == {"loss"}


def test_many_to_many_linear_bidirectional():
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, size=(128, 8, 1))
    y = X + np.concatenate([X[:, 1:], np.zeros((128, 1, 1))], axis=1)   # needs the future
    model = crnn.LSTM(1, 8, 1, output="linear", bidirectional=True, seed=0)
    trainer = crnn.Trainer(model, "adam", lr=0.03, batch_size=16, seed=0)
    history = trainer.fit(X, y, epochs=8, verbose=0)
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]


# ------------------------------------------------------------------ evaluate

def test_evaluate_matches_the_model_loss_and_accuracy():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(37, 9, 3))
    lengths = rng.integers(1, 10, size=37)
    y = rng.integers(0, 5, size=(37, 9))
    y[np.arange(9) >= lengths[:, None]] = -3          # padding labels: ignored
    model = crnn.LSTM(3, 6, 5, dtype="float64", seed=1)
    trainer = crnn.Trainer(model, batch_size=8)
    scores = trainer.evaluate(X, y, lengths)
    labels = np.where(np.arange(9) < lengths[:, None], y, 0)
    loss, _ = model.loss_and_grad(X, labels, lengths)
    assert scores["loss"] == pytest.approx(loss, rel=1e-12)
    real = np.arange(9) < lengths[:, None]
    assert scores["accuracy"] == pytest.approx((model.predict(X, lengths) == y)[real].mean())
    assert trainer.evaluate(X, y, lengths, batch_size=100)["loss"] == pytest.approx(loss, rel=1e-12)


def test_evaluate_linear_returns_loss_only():
    rng = np.random.default_rng(5)
    X = [rng.normal(size=(t, 2)) for t in (3, 7, 1, 5)]
    y = [rng.normal(size=(t, 3)) for t in (3, 7, 1, 5)]
    model = crnn.RNN(2, 4, 3, output="linear", dtype="float64", seed=2)
    scores = crnn.Trainer(model, batch_size=3).evaluate(X, y)
    assert set(scores) == {"loss"}
    assert scores["loss"] == pytest.approx(model.loss_and_grad(X, y)[0], rel=1e-12)


# ------------------------------------------------------------------ early stopping

def test_early_stopping_restores_the_best_epoch():
    X, y = delay_task(n=96, vocab=2)
    Xv, yv = delay_task(n=32, vocab=2, seed=7)
    yv = 1 - yv                        # the opposite rule: learning the task hurts it
    model = crnn.RNN(2, 8, 2, seed=0)
    recorder = Recorder(model)
    trainer = crnn.Trainer(model, "adam", lr=0.03, batch_size=16, seed=0)
    history = trainer.fit(X, y, epochs=20, validation_data=(Xv, yv), early_stopping=2,
                          callbacks=[recorder], verbose=0)
    val_loss = history.history["val_loss"]
    best = int(np.argmin(val_loss))
    assert history.best_epoch == best
    assert len(val_loss) == best + 3 < 20             # two epochs without improvement
    assert history.stopped_epoch == best + 2
    assert best != len(val_loss) - 1                  # so a restore was needed
    assert_params_equal(model.params, recorder.after_epoch[best])
    assert params_differ(model.params, recorder.after_epoch[-1])


def test_early_stopping_without_validation_monitors_the_training_loss():
    X, y = delay_task(n=64)
    model = crnn.LSTM(4, 8, 4, seed=0)
    recorder = Recorder(model)
    trainer = crnn.Trainer(model, "adam", lr=0.02, batch_size=16, seed=0)
    history = trainer.fit(X, y, epochs=4, early_stopping=1, callbacks=recorder, verbose=0)
    loss = history.history["loss"]
    assert history.best_epoch == int(np.argmin(loss))
    assert_params_equal(model.params, recorder.after_epoch[history.best_epoch])


# ------------------------------------------------------------------ clipping

def _one_full_batch_step(clip_norm):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(12, 6, 3))
    y = rng.integers(0, 3, size=(12, 6))
    model = crnn.RNN(3, 5, 3, dtype="float64", seed=3)
    before = snapshot(model)
    _, grads = model.loss_and_grad(X, y)
    trainer = crnn.Trainer(model, "sgd", lr=1.0, batch_size=12, clip_norm=clip_norm, seed=0)
    trainer.fit(X, y, epochs=1, shuffle=False, verbose=0)
    update = {k: model.params[k] - before[k] for k in before}
    norm = np.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    return update, grads, norm


def test_clipping_bounds_the_update():
    update, grads, norm = _one_full_batch_step(clip_norm=0.05)
    assert norm > 0.1                                   # clipping is active
    update_norm = np.sqrt(sum(float((u ** 2).sum()) for u in update.values()))
    assert update_norm <= 0.05 * (1 + 1e-9)
    assert update_norm == pytest.approx(0.05, rel=1e-4)
    for name in grads:                                   # same direction as -g
        np.testing.assert_allclose(update[name], -0.05 / (norm + 1e-6) * grads[name],
                                   rtol=1e-9, atol=1e-14)


def test_no_clipping_below_the_threshold():
    update, grads, norm = _one_full_batch_step(clip_norm=1e6)
    for name in grads:
        np.testing.assert_allclose(update[name], -grads[name], rtol=1e-12, atol=1e-15)


def test_clipping_matches_torch_clip_grad_norm():
    torch = pytest.importorskip("torch")
    update, grads, _ = _one_full_batch_step(clip_norm=0.05)
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()]
    for tensor, g in zip(tensors, grads.values()):
        tensor.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_norm_(tensors, 0.05)
    for tensor, name in zip(tensors, grads):
        np.testing.assert_allclose(update[name], -tensor.grad.numpy(), rtol=1e-10, atol=1e-15)


# ------------------------------------------------------------------ NaN guard

class Poisoned(crnn.LSTM):
    """An LSTM whose `poison_at`-th loss_and_grad call (1-based) returns a
    non-finite loss or gradient."""

    poison_at = None
    poison = "nan-grad"
    calls = 0

    def loss_and_grad(self, *args, **kwargs):
        result = list(super().loss_and_grad(*args, **kwargs))
        self.calls += 1
        if self.calls == self.poison_at:
            if self.poison == "nan-loss":
                result[0] = float("nan")
            else:
                result[1]["W0"][1, 2] = np.nan if self.poison == "nan-grad" else -np.inf
        return tuple(result)


@pytest.mark.parametrize("poison, words", [
    ("nan-grad", "gradient of ['W0'] contains NaN or infinity"),
    ("inf-grad", "gradient of ['W0'] contains NaN or infinity"),
    ("nan-loss", "the loss is nan"),
])
def test_nan_guard_stops_and_keeps_the_last_good_weights(poison, words):
    X, y = delay_task(n=64)
    model = Poisoned(4, 8, 4, seed=0)
    model.poison_at, model.poison = 7, poison          # epoch 2, batch 3 of 4
    recorder = Recorder(model)
    trainer = crnn.Trainer(model, "adam", lr=0.01, batch_size=16, seed=0)
    with pytest.raises(NonFiniteError) as caught:
        trainer.fit(X, y, epochs=3, callbacks=[recorder], verbose=0)
    message = str(caught.value)
    assert words in message
    assert "epoch 2 of 3, batch 3 of 4" in message
    assert (caught.value.epoch, caught.value.batch) == (1, 2)
    assert caught.value.history.epoch == [0]
    assert len(recorder.after_step) == 6
    assert_params_equal(model.params, recorder.after_step[-1])
    assert trainer.optimizer.steps == 6
    assert all(np.isfinite(v).all() for v in model.params.values())


def test_nan_guard_refuses_an_overflowing_update():
    X, y = delay_task(n=16)
    model = crnn.RNN(4, 8, 4, seed=0)
    before = snapshot(model)
    trainer = crnn.Trainer(model, "sgd", lr=1e300, batch_size=16, seed=0)   # inf in float32
    with pytest.raises(NonFiniteError, match="non-finite.*epoch 1 of 1, batch 1 of 1"):
        trainer.fit(X, y, verbose=0)
    assert_params_equal(model.params, before)


# ------------------------------------------------------------------ Ctrl-C

class InterruptAt:
    def __init__(self, model, epoch, batch):
        self.model, self.epoch, self.batch = model, epoch, batch
        self.current = None
        self.weights = None

    def on_epoch_begin(self, epoch, logs):
        self.current = epoch

    def on_batch_end(self, batch, logs):
        if (self.current, batch) == (self.epoch, self.batch):
            self.weights = snapshot(self.model)
            raise KeyboardInterrupt


def test_ctrl_c_from_a_callback_returns_the_history_so_far():
    X, y = delay_task(n=64)
    model = crnn.LSTM(4, 8, 4, seed=0)
    interrupt = InterruptAt(model, epoch=1, batch=2)
    trainer = crnn.Trainer(model, "adam", lr=0.01, batch_size=16, seed=0)
    history = trainer.fit(X, y, epochs=5, validation_data=(X, y), callbacks=[interrupt],
                          verbose=0)
    assert isinstance(history, crnn.History)
    assert history.interrupted
    assert history.epoch == [0]
    assert len(history.history["loss"]) == len(history.history["val_loss"]) == 1
    assert_params_equal(model.params, interrupt.weights)
    assert trainer.optimizer.steps == 4 + 3


class SignalDuringStep(optim.SGD):
    """Sends itself SIGINT while the `at`-th update is being written."""

    at = None

    def _update(self, params, grads, state, grad_scale, fresh, apply):
        finite = super()._update(params, grads, state, grad_scale, fresh, apply)
        if apply and self.steps == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return finite


@pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX signals")
def test_ctrl_c_during_an_update_completes_that_update():
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT has a custom handler in this process")
    X, y = delay_task(n=64)
    reference = crnn.RNN(4, 8, 4, seed=0)
    steps = []
    stop_after_six = type("Stop", (), {"on_batch_end": lambda self, batch, logs:
                                       steps.append(batch) or len(steps) == 6})()
    crnn.Trainer(reference, optim.SGD(lr=0.5), batch_size=16, seed=0).fit(
        X, y, epochs=3, callbacks=[stop_after_six], verbose=0)
    assert len(steps) == 6

    model = crnn.RNN(4, 8, 4, seed=0)
    optimizer = SignalDuringStep(lr=0.5)
    optimizer.at = 5                                   # during the sixth step
    history = crnn.Trainer(model, optimizer, batch_size=16, seed=0).fit(
        X, y, epochs=3, verbose=0)
    assert history.interrupted
    assert optimizer.steps == 6
    assert_params_equal(model.params, reference.params)


# ------------------------------------------------------------------ determinism

def _seeded_run(trainer_seed):
    X, y = sign_task(n=96, seed=3)
    model = crnn.LSTM(1, 8, 2, return_sequences=False, seed=11)
    trainer = crnn.Trainer(model, "adam", lr=0.02, batch_size=8, clip_norm=1.0,
                           seed=trainer_seed)
    history = trainer.fit(X, y, epochs=3, validation_data=(X[:20], y[:20]), verbose=0)
    return snapshot(model), {k: v for k, v in history.history.items() if k != "time"}


def _one_blas_thread():
    """threadpoolctl's limit when it is installed; else BLAS as configured
    (OpenBLAS partitions a GEMM the same way on every call, so a fixed
    thread count is reproducible too)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1)


def test_same_seeds_give_bit_identical_weights():
    with _one_blas_thread():
        first_params, first_history = _seeded_run(trainer_seed=5)
        second_params, second_history = _seeded_run(trainer_seed=5)
    assert_params_equal(first_params, second_params)
    assert first_history == second_history
    other_params, _ = _seeded_run(trainer_seed=6)     # the shuffling matters
    assert params_differ(first_params, other_params)


# ------------------------------------------------------------------ truncated BPTT

@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_bptt_longer_than_the_sequences_equals_full_bptt(kind):
    X, y = delay_task(n=48, steps=8)
    lengths = np.random.default_rng(0).integers(1, 9, size=48)
    results = []
    for bptt in (None, 8, 50):
        model = getattr(crnn, kind)(4, 6, 4, seed=0)
        trainer = crnn.Trainer(model, "adam", lr=0.01, batch_size=16, seed=0)
        history = trainer.fit(X, y, lengths, epochs=2, bptt=bptt, verbose=0)
        results.append((snapshot(model), history.history["loss"]))
    for params, loss in results[1:]:
        assert_params_equal(params, results[0][0])
        assert loss == results[0][1]


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_truncated_bptt_carries_the_state_without_gradient(kind):
    """k = 3 on sequences of up to 9 steps: three updates per batch, each
    the gradient of its own chunk with the state the previous chunk ended
    in (computed before that chunk's update) as a constant initial state;
    sequences that ended drop out."""
    rng = np.random.default_rng(8)
    lengths = np.array([9, 7, 4, 3, 9, 2])
    X = rng.normal(size=(6, 9, 2))
    y = rng.integers(0, 3, size=(6, 9))
    make = lambda: getattr(crnn, kind)(2, 5, 3, dtype="float64", seed=4)
    lr, k = 0.3, 3

    reference = make()
    state, alive_before = None, None
    for start in range(0, 9, k):
        alive = np.flatnonzero(lengths > start)
        chunk_lengths = np.minimum(lengths[alive] - start, k)
        stop = start + chunk_lengths.max()
        Xc, yc = X[alive, start:stop], y[alive, start:stop]
        if state is not None:
            keep = np.isin(alive_before, alive)
            state = tuple(s[:, keep] for s in state) if isinstance(state, tuple) else state[:, keep]
        _, next_state = reference.forward(Xc, chunk_lengths, initial_state=state,
                                          return_state=True)
        _, grads = reference.loss_and_grad(Xc, yc, chunk_lengths, initial_state=state)
        for name, grad in grads.items():
            reference.params[name][...] -= lr * grad
        state, alive_before = next_state, alive

    chunks = []
    model = make()
    trainer = crnn.Trainer(model, "sgd", lr=lr, batch_size=6, seed=0)
    trainer.fit(X, y, lengths, epochs=1, shuffle=False, bptt=k, verbose=0,
                callbacks=[type("C", (), {"on_batch_end":
                                          lambda self, b, logs: chunks.append(logs)})()])
    assert [logs["chunk"] for logs in chunks] == [0, 1, 2]
    assert [logs["size"] for logs in chunks] == [6, 4, 3]
    assert [logs["positions"] for logs in chunks] == [17, 10, 7]
    for name, value in model.params.items():
        np.testing.assert_allclose(value, reference.params[name], rtol=1e-11, atol=1e-13,
                                   err_msg=name)

    full = make()
    crnn.Trainer(full, "sgd", lr=lr, batch_size=6).fit(X, y, lengths, shuffle=False,
                                                       verbose=0)
    assert params_differ(full.params, model.params)


def test_bptt_refuses_many_to_one_and_bidirectional_models():
    X, y = sign_task(n=8)
    model = crnn.RNN(1, 4, 2, return_sequences=False, seed=0)
    with pytest.raises(ValueError, match="bptt needs a model with return_sequences=True"):
        crnn.Trainer(model).fit(X, y, bptt=2, verbose=0)
    X, y = delay_task(n=8)
    model = crnn.RNN(4, 4, 4, bidirectional=True, seed=0)
    with pytest.raises(ValueError, match="bptt needs a unidirectional model"):
        crnn.Trainer(model).fit(X, y, bptt=2, verbose=0)


# ------------------------------------------------------------------ callbacks

class Log:
    def __init__(self):
        self.calls = []

    def on_train_begin(self, logs):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, batch, logs):
        assert set(logs) == {"loss", "size", "positions", "grad_norm"}
        self.calls.append(("batch_end", batch))

    def on_epoch_end(self, epoch, logs):
        assert set(logs) == {"loss", "accuracy", "time"}
        self.calls.append(("epoch_end", epoch))

    def on_train_end(self, logs):
        self.calls.append(("train_end",))


def test_callback_hooks_run_in_order():
    X, y = delay_task(n=40)
    log = Log()
    crnn.Trainer(crnn.RNN(4, 4, 4, seed=0), batch_size=16).fit(
        X, y, epochs=2, callbacks=[log], verbose=0)
    per_epoch = lambda e: [("epoch_begin", e), ("batch_end", 0), ("batch_end", 1),
                           ("batch_end", 2), ("epoch_end", e)]
    assert log.calls == [("train_begin",)] + per_epoch(0) + per_epoch(1) + [("train_end",)]


def test_callback_returning_true_stops_after_that_batch():
    X, y = delay_task(n=64)
    stopper = type("S", (), {"on_batch_end": lambda self, batch, logs: batch == 1})()
    trainer = crnn.Trainer(crnn.RNN(4, 4, 4, seed=0), batch_size=16)
    history = trainer.fit(X, y, epochs=5, callbacks=stopper, verbose=0)
    assert trainer.optimizer.steps == 2
    assert history.epoch == [0] and history.stopped_epoch == 0
    assert not history.interrupted


def test_setting_stop_training_stops_after_that_epoch():
    X, y = delay_task(n=32)
    trainer = crnn.Trainer(crnn.GRU(4, 4, 4, seed=0), batch_size=16)

    class StopAtSecondEpoch:
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                trainer.stop_training = True

    history = trainer.fit(X, y, epochs=5, callbacks=[StopAtSecondEpoch()], verbose=0)
    assert history.epoch == [0, 1]
    assert trainer.optimizer.steps == 4
    trainer.fit(X, y, epochs=1, verbose=0)       # the flag resets on the next fit
    assert trainer.optimizer.steps == 6


def test_a_callback_can_schedule_the_learning_rate():
    X, y = delay_task(n=32)
    trainer = crnn.Trainer(crnn.RNN(4, 4, 4, seed=0), "sgd", lr=0.5, batch_size=16)
    seen = []

    class Halve:
        def on_epoch_begin(self, epoch, logs):
            seen.append(trainer.optimizer.lr)
            trainer.optimizer.lr = trainer.optimizer.lr / 2

    trainer.fit(X, y, epochs=3, callbacks=[Halve()], verbose=0)
    assert seen == [0.5, 0.25, 0.125]


# ------------------------------------------------------------------ output

def test_verbose_0_prints_nothing(capsys):
    X, y = delay_task(n=32)
    crnn.Trainer(crnn.RNN(4, 4, 4, seed=0), batch_size=16).fit(
        X, y, epochs=2, validation_data=(X, y), verbose=0)
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_prints_one_line_per_epoch(capsys, verbose):
    X, y = delay_task(n=32)
    crnn.Trainer(crnn.RNN(4, 4, 4, seed=0), batch_size=16).fit(
        X, y, epochs=2, validation_data=(X, y), verbose=verbose)
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2
    for epoch, line in enumerate(lines, start=1):
        assert line.startswith(f"Epoch {epoch}/2 2/2")
        for word in ("loss", "accuracy", "val_loss", "val_accuracy", "seq/s"):
            assert word in line


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal(monkeypatch):
    X, y = delay_task(n=64)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    crnn.Trainer(crnn.RNN(4, 4, 4, seed=0), batch_size=16).fit(X, y, epochs=1, verbose=1)
    text = terminal.getvalue()
    assert "\r" in text and "ETA" in text and "seq/s" in text
    assert "4/4 [" in text and "] loss " in text
    assert text.endswith("\n")


# ------------------------------------------------------------------ batches

class Spy(crnn.RNN):
    """Records the ids (feature 0 of step 0) and lengths of every batch."""

    def loss_and_grad(self, X, y, lengths=None, *args, **kwargs):
        self.batches.append((np.asarray(X)[:, 0, 0].astype(int).tolist(),
                             np.asarray(lengths).tolist(), np.asarray(X).shape[1]))
        return super().loss_and_grad(X, y, lengths, *args, **kwargs)


def test_ragged_data_is_bucketed_by_length_and_reshuffled():
    rng = np.random.default_rng(10)
    n, steps = 200, 40
    lengths = rng.integers(1, steps + 1, size=n)
    X = rng.normal(size=(n, steps, 1))
    X[:, 0, 0] = np.arange(n)                       # an id per sequence
    y = rng.integers(0, 2, size=(n, steps))
    model = Spy(1, 4, 2, seed=0)
    model.batches = []
    crnn.Trainer(model, batch_size=10, seed=0).fit(X, y, lengths, epochs=2, verbose=0)
    epochs = [model.batches[:20], model.batches[20:]]
    assert len(model.batches) == 40
    for batches in epochs:
        ids = sorted(i for batch_ids, _, _ in batches for i in batch_ids)
        assert ids == list(range(n))                # every sequence once per epoch
        padding = sum(max(ls) * len(ls) - sum(ls) for _, ls, _ in batches)
        assert padding < 0.05 * lengths.sum()       # random batches: about 45 %
        assert all(width == max(ls) for _, ls, width in batches)   # cut to the longest
    first = {tuple(sorted(ids)) for ids, _, _ in epochs[0]}
    second = {tuple(sorted(ids)) for ids, _, _ in epochs[1]}
    assert first != second
    longest = [max(ls) for _, ls, _ in epochs[0]]
    assert longest != sorted(longest)               # the batches are shuffled too


def test_shuffle_false_keeps_the_data_order():
    X = np.zeros((30, 4, 1))
    X[:, 0, 0] = np.arange(30)
    y = np.zeros((30, 4), dtype=int)
    model = Spy(1, 3, 2, seed=0)
    model.batches = []
    crnn.Trainer(model, batch_size=8, seed=0).fit(X, y, epochs=1, shuffle=False, verbose=0)
    assert [ids for ids, _, _ in model.batches] == [list(range(i, min(i + 8, 30)))
                                                    for i in range(0, 30, 8)]


# ------------------------------------------------------------------ resume

def test_resume_from_saved_weights_and_optimizer_state(tmp_path):
    X, y = delay_task(n=48)
    straight = crnn.LSTM(4, 8, 4, seed=0)
    crnn.Trainer(straight, "adam", lr=0.01, batch_size=16).fit(
        X, y, epochs=2, shuffle=False, verbose=0)

    first = crnn.LSTM(4, 8, 4, seed=0)
    trainer = crnn.Trainer(first, "adam", lr=0.01, batch_size=16)
    trainer.fit(X, y, epochs=1, shuffle=False, verbose=0)
    np.savez(tmp_path / "weights.npz", **first.params)
    np.savez(tmp_path / "optimizer.npz", **trainer.optimizer.state_dict())

    second = crnn.LSTM(4, 8, 4, seed=99)
    with np.load(tmp_path / "weights.npz") as weights:
        second.set_params(dict(weights))
    resumed = crnn.Trainer(second, optim.Adam(lr=0.5), batch_size=16)
    with np.load(tmp_path / "optimizer.npz") as state:
        resumed.optimizer.load_state_dict(state)
    assert resumed.optimizer.lr == 0.01
    resumed.fit(X, y, epochs=1, shuffle=False, verbose=0)
    assert_params_equal(second.params, straight.params)


# ------------------------------------------------------------------ arguments

@pytest.fixture
def small():
    X, y = delay_task(n=8, steps=5)
    return crnn.RNN(4, 3, 4, seed=0), X, y


@pytest.mark.parametrize("kwargs, error, message", [
    ({"optimizer": "adamw"}, ValueError, "optimizer must be one of .*got 'adamw'"),
    ({"optimizer": 3}, TypeError, "optimizer must be one of .*got 3"),
    ({"lr": -1}, ValueError, "lr must be a finite number >= 0, got -1"),
    ({"lr": "0.1"}, TypeError, "lr must be a real number, got '0.1'"),
    ({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
    ({"batch_size": 2.5}, TypeError, "batch_size must be an integer, got 2.5"),
    ({"clip_norm": 0}, ValueError, "clip_norm must be a finite number > 0, got 0"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay must be a finite number >= 0"),
    ({"seed": "x"}, TypeError, "seed must be an int or None, got 'x'"),
    ({"optimizer": optim.SGD(0.1), "lr": 0.5}, ValueError,
     "lr and weight_decay are set on the optimizer object"),
])
def test_bad_trainer_arguments(small, kwargs, error, message):
    model, _, _ = small
    with pytest.raises(error, match=message):
        crnn.Trainer(model, **kwargs)


def test_trainer_needs_a_model_with_an_output_layer():
    with pytest.raises(TypeError, match="model must be a crnn model"):
        crnn.Trainer(object())
    with pytest.raises(ValueError, match="output=None"):
        crnn.Trainer(crnn.RNN(3, 4, output=None))


def test_names_and_objects_select_the_optimizer(small):
    model, _, _ = small
    trainer = crnn.Trainer(model, "momentum", lr=0.2, weight_decay=0.01)
    assert isinstance(trainer.optimizer, optim.SGD)
    assert (trainer.optimizer.lr, trainer.optimizer.momentum,
            trainer.optimizer.weight_decay) == (0.2, 0.9, 0.01)
    adam = optim.Adam(lr=0.3)
    assert crnn.Trainer(model, adam).optimizer is adam


@pytest.mark.parametrize("kwargs, error, message", [
    ({"epochs": 0}, ValueError, "epochs must be >= 1, got 0"),
    ({"verbose": 3}, ValueError, "verbose must be 0, 1 or 2, got 3"),
    ({"shuffle": "yes"}, TypeError, "shuffle must be True or False"),
    ({"early_stopping": -1}, ValueError, "early_stopping must be >= 0, got -1"),
    ({"bptt": 0}, ValueError, "bptt must be >= 1, got 0"),
    ({"callbacks": [object()]}, TypeError, "each callback must have at least one method"),
    ({"callbacks": 5}, TypeError, "callbacks must be a list"),
    ({"validation_data": (np.zeros((2, 5), dtype=int),)}, TypeError,
     "validation_data must be a tuple \\(X, y\\) or \\(X, y, lengths\\)"),
    ({"validation_data": (np.zeros((2, 5, 3)), np.zeros((2, 5), dtype=int))}, ValueError,
     "validation_data: X has 3 features, the model expects 4"),
    ({"lengths": np.full(8, 6)}, ValueError, "every length must be in \\[1, 5\\]"),
])
def test_bad_fit_arguments_raise_before_training(small, kwargs, error, message):
    model, X, y = small
    before = snapshot(model)
    trainer = crnn.Trainer(model, "sgd", lr=0.1)
    with pytest.raises(error, match=message):
        trainer.fit(X, y, **{"verbose": 0, **kwargs})
    assert_params_equal(model.params, before)
    assert trainer.optimizer.steps == 0


def test_bad_data_raises_the_models_errors(small):
    model, X, y = small
    trainer = crnn.Trainer(model)
    with pytest.raises(ValueError, match="X has 2 features, the model expects 4"):
        trainer.fit(np.zeros((8, 5, 2)), y, verbose=0)
    with pytest.raises(ValueError, match="class ids in y must be in \\[0, 4\\)"):
        trainer.fit(X, y + 4, verbose=0)
    with pytest.raises(ValueError, match="y must be class ids of shape \\(8, 5\\)"):
        trainer.evaluate(X, y[:, :3])
