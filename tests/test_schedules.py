"""Learning-rate schedules (crnn.optim.StepLR, ExponentialLR,
CosineWithWarmup, ReduceLROnPlateau): each one's sequence of rates against
torch.optim.lr_scheduler's (skipped without torch), their checks, and the
Trainer's use of them (stepping, History's "lr", checkpoints and resume)."""
import math

import numpy as np
import pytest

import crnn
from crnn import optim


def rates(schedule, steps, metrics=None):
    """The optimizer's rate before each of `steps` steps."""
    seen = []
    for i in range(steps):
        seen.append(schedule.optimizer.lr)
        if metrics is None:
            schedule.step()
        else:
            schedule.step(metrics[i])
    return seen


def torch_rates(torch, make, steps, metrics=None, lr=0.5):
    parameter = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([parameter], lr=lr)
    scheduler = make(opt)
    seen = []
    for i in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        if metrics is None:
            scheduler.step()
        else:
            scheduler.step(metrics[i])
    return seen


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("step_size,gamma", [(1, 0.5), (3, 0.1), (4, 1.5)])
def test_step_lr_follows_torch(torch, step_size, gamma):
    ours = rates(optim.StepLR(optim.SGD(lr=0.5), step_size, gamma), 12)
    theirs = torch_rates(torch, lambda o: torch.optim.lr_scheduler.StepLR(
        o, step_size, gamma), 12)
    np.testing.assert_allclose(ours, theirs, rtol=1e-13)


@pytest.mark.parametrize("gamma", [0.9, 0.5, 1.01])
def test_exponential_lr_follows_torch(torch, gamma):
    ours = rates(optim.ExponentialLR(optim.Adam(lr=0.5), gamma), 15)
    theirs = torch_rates(torch, lambda o: torch.optim.lr_scheduler.ExponentialLR(
        o, gamma), 15)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


@pytest.mark.parametrize("total,warmup,min_lr,start", [
    (20, 5, 0.0, 1 / 3), (12, 0, 0.01, 1 / 3), (30, 10, 0.05, 0.01), (7, 6, 0.0, 0.5)])
def test_cosine_with_warmup_follows_torch(torch, total, warmup, min_lr, start):
    lr_sched = torch.optim.lr_scheduler

    def make(opt):
        cosine = lr_sched.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=min_lr)
        if warmup == 0:
            return cosine
        linear = lr_sched.LinearLR(opt, start_factor=start, total_iters=warmup)
        return lr_sched.SequentialLR(opt, [linear, cosine], milestones=[warmup])

    schedule = optim.CosineWithWarmup(optim.SGD(lr=0.5), total_steps=total,
                                      warmup_steps=warmup, min_lr=min_lr,
                                      warmup_start_factor=start)
    ours = rates(schedule, total + 1)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # SequentialLR's step(0) notice
        theirs = torch_rates(torch, make, total + 1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-13)
    # past the end it stays at min_lr (PyTorch's cosine would rise again)
    assert rates(schedule, 3) == [min_lr] * 3


PLATEAU_METRICS = [5.0, 4.0, 4.0, 4.0, 3.9999, 4.1, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0,
                   3.0, 2.0, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5, 2.5]


@pytest.mark.parametrize("options", [
    dict(factor=0.5, patience=1),
    dict(factor=0.5, patience=2, cooldown=2),
    dict(factor=0.1, patience=0, min_lr=0.004),
    dict(factor=0.5, patience=1, threshold=0.01, threshold_mode="abs"),
    dict(factor=0.5, patience=1, mode="max"),
    dict(factor=0.9, patience=0, eps=0.1),
])
def test_reduce_on_plateau_follows_torch(torch, options):
    ours = rates(optim.ReduceLROnPlateau(optim.SGD(lr=0.5), **options),
                 len(PLATEAU_METRICS), PLATEAU_METRICS)
    theirs = torch_rates(torch, lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(
        o, **options), len(PLATEAU_METRICS), PLATEAU_METRICS)
    np.testing.assert_allclose(ours, theirs, rtol=1e-13)
    # it reduced, but where eps forbids a reduction that small (0.05 < 0.1)
    assert (min(ours) < 0.5) == ("eps" not in options)


# ------------------------------------------------------------ bad input

class NotAnOptimizer:
    lr = "fast"

    def step(self):
        pass


@pytest.mark.parametrize("target", [None, "adam", NotAnOptimizer(), object()])
def test_a_schedule_refuses_an_optimizer_it_cannot_drive(target):
    with pytest.raises(ValueError, match="drives an optimizer's learning rate"):
        optim.StepLR(target, 2)


def test_a_zero_rate_cannot_be_scheduled():
    with pytest.raises(ValueError, match="must be > 0 to be scheduled, got lr=0"):
        optim.ExponentialLR(optim.SGD(lr=0.0), 0.5)


@pytest.mark.parametrize("make,message", [
    (lambda o: optim.StepLR(o, 0), "step_size must be an int >= 1, got 0"),
    (lambda o: optim.StepLR(o, 2.5), "step_size must be an int"),
    (lambda o: optim.ExponentialLR(o, 0.0), r"gamma must be in \(0"),
    (lambda o: optim.ExponentialLR(o, float("nan")), "gamma must be a finite number"),
    (lambda o: optim.CosineWithWarmup(o, 10, 10), "warmup_steps must be < total_steps"),
    (lambda o: optim.CosineWithWarmup(o, 10, min_lr=1.0), r"min_lr must be in \[0"),
    (lambda o: optim.CosineWithWarmup(o, 10, 2, warmup_start_factor=0),
     "warmup_start_factor must be in"),
    (lambda o: optim.ReduceLROnPlateau(o, factor=1.0), r"factor must be in \(0"),
    (lambda o: optim.ReduceLROnPlateau(o, monitor="accuracy"), "monitor must be one of"),
    (lambda o: optim.ReduceLROnPlateau(o, mode="lowest"), "mode must be one of"),
    (lambda o: optim.ReduceLROnPlateau(o, patience=-1), "patience must be an int >= 0"),
])
def test_settings_out_of_range_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make(optim.SGD(lr=0.1))


def test_plateau_needs_its_metric():
    with pytest.raises(ValueError, match="needs the epoch's val_loss"):
        optim.ReduceLROnPlateau(optim.SGD(lr=0.1)).step()


def test_load_state_dict_checks_type_and_settings():
    schedule = optim.StepLR(optim.SGD(lr=0.1), 3)
    with pytest.raises(ValueError, match="cannot load the state of 'ExponentialLR'"):
        schedule.load_state_dict(optim.ExponentialLR(optim.SGD(lr=0.1), 0.5).state_dict())
    with pytest.raises(ValueError, match="the state's step_size is 2"):
        schedule.load_state_dict(optim.StepLR(optim.SGD(lr=0.1), 2).state_dict())


# ------------------------------------------------------------ the Trainer

def problem(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(24, 6, 3))
    y = (X[..., 0] > 0).astype(int)
    return X, y


def test_the_trainer_refuses_a_schedule_on_another_optimizer():
    model = crnn.GRU(3, 5, 2, seed=0)
    with pytest.raises(ValueError, match="not the trainer's optimizer"):
        crnn.Trainer(model, schedule=optim.StepLR(optim.SGD(lr=0.1), 2))
    with pytest.raises(ValueError, match="schedule must be a crnn.optim schedule"):
        crnn.Trainer(model, schedule="cosine")
    trainer = crnn.Trainer(model, schedule=lambda opt: optim.ReduceLROnPlateau(opt))
    X, y = problem()
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.raises(ValueError, match="monitors val_loss, and fit has no validation"):
        trainer.fit(X, y, verbose=0)
    for key in before:      # refused before any step
        np.testing.assert_array_equal(model.params[key], before[key])


def test_the_trainer_steps_epoch_schedules_and_records_the_rate():
    model = crnn.GRU(3, 5, 2, seed=0)
    opt = optim.SGD(lr=0.4)
    trainer = crnn.Trainer(model, optimizer=opt, batch_size=8, seed=0,
                           schedule=optim.StepLR(opt, step_size=2, gamma=0.5))
    history = trainer.fit(*problem(), epochs=5, verbose=0)
    assert history.history["lr"] == [0.4, 0.4, 0.2, 0.2, 0.1]
    assert opt.lr == 0.1          # epoch 5 (the next): 0.4 · 0.5 ** (5 // 2)
    # no schedule: no "lr" key (History keeps its keys)
    plain = crnn.Trainer(crnn.GRU(3, 5, 2, seed=0), seed=0).fit(*problem(), verbose=0)
    assert "lr" not in plain.history


def test_the_trainer_steps_update_schedules_every_update():
    model = crnn.LSTM(3, 5, 2, seed=0)
    trainer = crnn.Trainer(model, optimizer="sgd", lr=0.3, batch_size=8, seed=0,
                           schedule=lambda opt: optim.CosineWithWarmup(
                               opt, total_steps=9, warmup_steps=3))
    history = trainer.fit(*problem(), epochs=3, verbose=0)    # 3 updates an epoch
    expected = optim.CosineWithWarmup(optim.SGD(lr=0.3), 9, 3)
    seen = rates(expected, 9)
    # the rate in force at each epoch's end: that of its last update
    np.testing.assert_allclose(history.history["lr"], [seen[3], seen[6], 0.0],
                               atol=1e-15)
    assert trainer.schedule.last_epoch == 9


def test_plateau_in_the_trainer_reads_the_monitored_loss():
    model = crnn.RNN(3, 4, 2, seed=0)
    opt = optim.SGD(lr=1e-3)        # the loss hardly moves: never by half
    schedule = optim.ReduceLROnPlateau(opt, monitor="loss", factor=0.5, patience=0,
                                       threshold=0.5)
    history = crnn.Trainer(model, optimizer=opt, seed=0, schedule=schedule).fit(
        *problem(), epochs=4, verbose=0)
    assert history.history["lr"] == [1e-3, 1e-3, 5e-4, 2.5e-4]


@pytest.mark.parametrize("make", [
    lambda opt: optim.StepLR(opt, 1, 0.7),
    lambda opt: optim.CosineWithWarmup(opt, 14, 4, min_lr=0.001),
    lambda opt: optim.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=0.2),
])
def test_a_checkpoint_resumes_the_schedule(tmp_path, make):
    X, y = problem(1)
    validation = problem(2)

    def trainer():
        return crnn.Trainer(crnn.LSTM(3, 6, 2, seed=3), optimizer="adam", lr=0.05,
                            batch_size=8, seed=4, schedule=make)

    straight = trainer()
    full = straight.fit(X, y, epochs=4, validation_data=validation, verbose=0)
    first = trainer()
    path = tmp_path / "run.npz"
    first.fit(X, y, epochs=2, validation_data=validation, verbose=0, checkpoint=path)
    second = trainer()
    resumed = second.fit(X, y, epochs=4, validation_data=validation, verbose=0,
                         resume_from=path)
    assert resumed.history["lr"] == full.history["lr"]
    assert second.optimizer.lr == straight.optimizer.lr
    assert second.schedule.state_dict() == straight.schedule.state_dict()
    for key, value in straight.model.params.items():
        np.testing.assert_array_equal(second.model.params[key], value)
    # a checkpoint without a schedule is not resumed with one
    plain = crnn.Trainer(crnn.LSTM(3, 6, 2, seed=3), seed=4)
    plain.fit(X, y, epochs=1, verbose=0, checkpoint=path)
    with pytest.raises(ValueError, match="was written without a learning-rate schedule"):
        trainer().fit(X, y, epochs=2, validation_data=validation, verbose=0,
                      resume_from=path)
    assert math.isfinite(full.history["loss"][-1])
