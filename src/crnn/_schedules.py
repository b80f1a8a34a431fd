"""Learning-rate schedules, exported by crnn.optim: step decay, exponential
decay, cosine annealing with a linear warm-up, and ReduceLROnPlateau.

Each follows ``torch.optim.lr_scheduler``'s semantics: built on an
optimizer (whose ``lr`` at that moment is the base rate), it sets the
optimizer's ``lr`` when built and at every ``step``.  ``interval`` says
what a step is: ``"epoch"`` (StepLR, ExponentialLR, ReduceLROnPlateau, as
PyTorch's are stepped once an epoch) or ``"step"`` (CosineWithWarmup, once
an optimizer update).  `crnn.Trainer` steps a schedule given as
``Trainer(..., schedule=...)``, records the rate per epoch in its History
(``"lr"``) and saves the schedule's state in checkpoints.

Neighbours: nothing of crnn below (an optimizer is anything with a real,
settable ``lr`` and a ``step`` method: crnn.optim's); crnn.optim (which
exports the classes) and the trainer above.
"""
import math
import numbers

__all__ = ["Schedule", "StepLR", "ExponentialLR", "CosineWithWarmup",
           "ReduceLROnPlateau", "check_schedule"]


def _number(value, name, low=None, high=None, low_open=False, high_open=False):
    """`value` as a float in the interval given (each bound optional)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        interval = (("(" if low_open else "[") + f"{low if low is not None else '-inf'}, "
                    f"{high if high is not None else 'inf'}" + (")" if high_open else "]"))
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def _count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class Schedule:
    """The base of every schedule: the optimizer it drives, its base rate,
    the steps taken (``last_epoch``, PyTorch's name) and its state.

    Subclasses set ``interval`` (``"epoch"`` or ``"step"``) and
    ``_settings`` (the constructor's arguments kept in ``state_dict``) and
    define ``_rate(steps)``, the rate after that many steps.

    Parameters
    ----------
    optimizer : crnn.optim.Optimizer
        The optimizer whose ``lr`` the schedule sets; its ``lr`` now is
        the base rate.

    Raises
    ------
    ValueError
        `optimizer` is not an optimizer with a real ``lr`` and a ``step``
        method, or its ``lr`` is not > 0.

    Examples
    --------
    >>> opt = crnn.optim.SGD(lr=0.1)
    >>> schedule = crnn.optim.ExponentialLR(opt, gamma=0.5)
    >>> schedule.interval, schedule.base_lr, schedule.last_epoch
    ('epoch', 0.1, 0)
    >>> schedule.step()
    >>> schedule.lr, schedule.state_dict()["last_epoch"]
    (0.05, 1)
    """

    interval = "epoch"
    _settings = ()

    def __init__(self, optimizer):
        lr = getattr(optimizer, "lr", None)
        if not callable(getattr(optimizer, "step", None)) or isinstance(lr, bool) \
                or not isinstance(lr, numbers.Real):
            raise ValueError(
                f"{type(self).__name__} drives an optimizer's learning rate: it "
                f"needs a crnn.optim optimizer (a real `lr` and a `step`), got "
                f"{optimizer!r}")
        if not lr > 0:
            raise ValueError(
                f"{type(self).__name__} scales the optimizer's learning rate, "
                f"which must be > 0 to be scheduled, got lr={lr!r}")
        self.optimizer = optimizer
        self.base_lr = float(lr)
        self.last_epoch = 0

    def _start(self):
        """Set the rate of step 0 (PyTorch's first step at construction)."""
        self.optimizer.lr = self._rate(0)

    @property
    def lr(self):
        """The learning rate in force (the optimizer's)."""
        return self.optimizer.lr

    def step(self, metric=None):
        """Advance by one `interval` and set the optimizer's rate.

        Parameters
        ----------
        metric : float, optional
            Read by ReduceLROnPlateau only (the monitored value).
        """
        self.last_epoch += 1
        self.optimizer.lr = self._rate(self.last_epoch)

    def update_end(self):
        """What `crnn.Trainer` calls after each optimizer update.

        Notes
        -----
        A step for a schedule stepped per update (``interval="step"``);
        nothing for the others.
        """
        if self.interval == "step":
            self.step()

    def epoch_end(self, logs):
        """What `crnn.Trainer` calls at the end of each epoch.

        Parameters
        ----------
        logs : dict
            The epoch's logs (``"loss"``, ``"val_loss"``, ...), read by
            ReduceLROnPlateau.

        Notes
        -----
        A step for a schedule stepped per epoch (``interval="epoch"``);
        nothing for the others.
        """
        if self.interval == "epoch":
            self.step()

    def state_dict(self):
        """The schedule's state, to save and resume.

        Returns
        -------
        dict
            Plain Python values (JSON stores them): ``"type"``, the
            settings, ``"base_lr"``, ``"last_epoch"`` (and
            ReduceLROnPlateau's counters).
        """
        state = {"type": type(self).__name__, "base_lr": self.base_lr,
                 "last_epoch": self.last_epoch}
        state.update({name: getattr(self, name) for name in self._settings})
        return state

    def load_state_dict(self, state):
        """Take back what `state_dict` gave (to resume); the optimizer's
        rate is its own state's.

        Raises
        ------
        ValueError
            A state of another schedule type or other settings.
        """
        if not isinstance(state, dict) or state.get("type") != type(self).__name__:
            got = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"a {type(self).__name__} cannot load the state of "
                             f"{got!r}")
        for name in self._settings:
            if state.get(name) != getattr(self, name):
                raise ValueError(
                    f"the state's {name} is {state.get(name)!r}, this "
                    f"{type(self).__name__}'s is {getattr(self, name)!r}")
        self.base_lr = _number(state["base_lr"], "base_lr", 0, low_open=True)
        self.last_epoch = _count(state["last_epoch"], "last_epoch", 0)
        self._load_extra(state)

    def _load_extra(self, state):
        pass

    def __repr__(self):
        settings = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._settings)
        return f"{type(self).__name__}({settings})"


class StepLR(Schedule):
    """Step decay: ``lr = base_lr · gamma ** (epoch // step_size)``.

    PyTorch's ``StepLR``, stepped once an epoch.

    Parameters
    ----------
    optimizer : crnn.optim.Optimizer
        Its ``lr`` when the schedule is built is the base rate.
    step_size : int
        Epochs between two decays (>= 1).
    gamma : float, default 0.1
        The factor of each decay, > 0.

    Raises
    ------
    ValueError
        An optimizer it cannot drive, or a setting out of range.

    Examples
    --------
    >>> opt = crnn.optim.SGD(lr=1.0)
    >>> schedule = crnn.optim.StepLR(opt, step_size=2, gamma=0.5)
    >>> rates = []
    >>> for epoch in range(5):
    ...     rates.append(opt.lr)
    ...     schedule.step()
    >>> rates
    [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    _settings = ("step_size", "gamma")

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = _count(step_size, "step_size", 1)
        self.gamma = _number(gamma, "gamma", 0, low_open=True)
        self._start()

    def _rate(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(Schedule):
    """Exponential decay: ``lr = base_lr · gamma ** epoch``.

    PyTorch's ``ExponentialLR``, stepped once an epoch.

    Parameters
    ----------
    optimizer : crnn.optim.Optimizer
        Its ``lr`` when the schedule is built is the base rate.
    gamma : float
        The factor of each epoch, > 0.

    Raises
    ------
    ValueError
        An optimizer it cannot drive, or a setting out of range.

    Examples
    --------
    >>> opt = crnn.optim.Adam(lr=0.1)
    >>> schedule = crnn.optim.ExponentialLR(opt, gamma=0.5)
    >>> schedule.step(); schedule.step()
    >>> opt.lr
    0.025
    """

    _settings = ("gamma",)

    def __init__(self, optimizer, gamma):
        super().__init__(optimizer)
        self.gamma = _number(gamma, "gamma", 0, low_open=True)
        self._start()

    def _rate(self, epoch):
        return self.base_lr * self.gamma ** epoch


class CosineWithWarmup(Schedule):
    """A linear warm-up, then cosine annealing, stepped once an update.

    Over the first `warmup_steps` updates the rate rises linearly from
    ``base_lr · warmup_start_factor`` to ``base_lr`` (PyTorch's
    ``LinearLR``); then over the remaining ``total_steps - warmup_steps``
    it follows ``min_lr + (base_lr - min_lr) · (1 + cos(π s / S)) / 2``
    (PyTorch's ``CosineAnnealingLR`` with ``eta_min=min_lr``, ``T_max=S``;
    the two joined as PyTorch's ``SequentialLR`` joins them).  After
    `total_steps` it stays at `min_lr` (where PyTorch's cosine would
    rise again).

    Parameters
    ----------
    optimizer : crnn.optim.Optimizer
        Its ``lr`` when the schedule is built is the base rate.
    total_steps : int
        Updates of the whole schedule (>= 1), e.g. epochs × batches.
    warmup_steps : int, default 0
        Updates of the warm-up, in [0, total_steps).
    min_lr : float, default 0.0
        The rate at the end, in [0, base_lr].
    warmup_start_factor : float, default 1/3
        The first update's fraction of the base rate, in (0, 1]
        (PyTorch's ``LinearLR`` default).

    Raises
    ------
    ValueError
        An optimizer it cannot drive, or a setting out of range.

    Examples
    --------
    >>> opt = crnn.optim.SGD(lr=1.0)
    >>> schedule = crnn.optim.CosineWithWarmup(opt, total_steps=6, warmup_steps=2,
    ...                                        warmup_start_factor=0.5)
    >>> rates = []
    >>> for update in range(7):
    ...     rates.append(round(opt.lr, 4))
    ...     schedule.step()
    >>> rates
    [0.5, 0.75, 1.0, 0.8536, 0.5, 0.1464, 0.0]
    """

    interval = "step"
    _settings = ("total_steps", "warmup_steps", "min_lr", "warmup_start_factor")

    def __init__(self, optimizer, total_steps, warmup_steps=0, min_lr=0.0,
                 warmup_start_factor=1 / 3):
        super().__init__(optimizer)
        self.total_steps = _count(total_steps, "total_steps", 1)
        self.warmup_steps = _count(warmup_steps, "warmup_steps", 0)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps must be < total_steps = "
                             f"{self.total_steps}, got {self.warmup_steps}")
        self.min_lr = _number(min_lr, "min_lr", 0, self.base_lr)
        self.warmup_start_factor = _number(warmup_start_factor, "warmup_start_factor",
                                           0, 1, low_open=True)
        self._start()

    def _rate(self, step):
        warmup = self.warmup_steps
        if step < warmup:
            factor = self.warmup_start_factor
            return self.base_lr * (factor + (1 - factor) * step / warmup)
        span = self.total_steps - warmup
        if step >= self.total_steps:
            return self.min_lr
        cosine = (1 + math.cos(math.pi * (step - warmup) / span)) / 2
        return self.min_lr + (self.base_lr - self.min_lr) * cosine


class ReduceLROnPlateau(Schedule):
    """Divide the rate when a monitored loss stops improving.

    PyTorch's ``ReduceLROnPlateau``, stepped once an epoch with the
    epoch's `monitor` value: when it has not improved (by `threshold`) for
    more than `patience` epochs, ``lr = max(lr · factor, min_lr)``; then
    `cooldown` epochs pass before bad epochs count again.

    Parameters
    ----------
    optimizer : crnn.optim.Optimizer
        The optimizer whose ``lr`` it reduces.
    monitor : {"val_loss", "loss"}, default "val_loss"
        What `crnn.Trainer` passes to `step` at the end of each epoch
        (``"val_loss"`` needs validation data).
    mode : {"min", "max"}, default "min"
        Whether lower or higher values are improvements.
    factor : float, default 0.1
        The factor of each reduction, in (0, 1).
    patience : int, default 10
        Epochs without improvement tolerated before a reduction.
    threshold : float, default 1e-4
        The least change that counts as an improvement, relative
        (``threshold_mode="rel"``) or absolute (``"abs"``).
    threshold_mode : {"rel", "abs"}, default "rel"
    cooldown : int, default 0
        Epochs after a reduction during which bad epochs are not counted.
    min_lr : float, default 0.0
        The rate is never reduced below it.
    eps : float, default 1e-8
        A reduction smaller than this is not applied.

    Raises
    ------
    ValueError
        An optimizer it cannot drive, or a setting out of range.

    Examples
    --------
    >>> opt = crnn.optim.SGD(lr=1.0)
    >>> schedule = crnn.optim.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    >>> for loss in [3.0, 2.0, 2.0, 2.0, 2.0, 2.0]:
    ...     schedule.step(loss)
    >>> opt.lr
    0.25
    """

    _settings = ("monitor", "mode", "factor", "patience", "threshold",
                 "threshold_mode", "cooldown", "min_lr", "eps")

    def __init__(self, optimizer, monitor="val_loss", mode="min", factor=0.1,
                 patience=10, threshold=1e-4, threshold_mode="rel", cooldown=0,
                 min_lr=0.0, eps=1e-8):
        super().__init__(optimizer)
        for name, value, allowed in (("monitor", monitor, ("val_loss", "loss")),
                                     ("mode", mode, ("min", "max")),
                                     ("threshold_mode", threshold_mode, ("rel", "abs"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.monitor, self.mode, self.threshold_mode = monitor, mode, threshold_mode
        self.factor = _number(factor, "factor", 0, 1, low_open=True, high_open=True)
        self.patience = _count(patience, "patience", 0)
        self.threshold = _number(threshold, "threshold", 0)
        self.cooldown = _count(cooldown, "cooldown", 0)
        self.min_lr = _number(min_lr, "min_lr", 0)
        self.eps = _number(eps, "eps", 0)
        self.best = math.inf if mode == "min" else -math.inf
        self.bad_epochs = 0
        self.cooldown_left = 0

    def _better(self, value):
        if self.mode == "min":
            bound = (self.best * (1 - self.threshold) if self.threshold_mode == "rel"
                     else self.best - self.threshold)
            return value < bound
        bound = (self.best * (1 + self.threshold) if self.threshold_mode == "rel"
                 else self.best + self.threshold)
        return value > bound

    def step(self, metric=None):
        """Count one epoch, and reduce the rate after too many without
        progress.

        Parameters
        ----------
        metric : float
            The epoch's monitored value (`monitor`).

        Raises
        ------
        ValueError
            `metric` is not a number.
        """
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
            raise ValueError(f"ReduceLROnPlateau.step needs the epoch's "
                             f"{self.monitor} (a number), got {metric!r}")
        metric = float(metric)
        self.last_epoch += 1
        if self._better(metric):
            self.best, self.bad_epochs = metric, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0         # bad epochs in a cooldown do not count
        if self.bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_left, self.bad_epochs = self.cooldown, 0

    def epoch_end(self, logs):
        """What `crnn.Trainer` calls at the end of each epoch.

        Parameters
        ----------
        logs : dict
            The epoch's logs: `step` gets ``logs[monitor]``.
        """
        self.step(logs[self.monitor])

    def state_dict(self):
        """The schedule's state, to save and resume.

        Returns
        -------
        dict
            Schedule.state_dict's, with ``"best"``, ``"bad_epochs"`` and
            ``"cooldown_left"``.
        """
        state = super().state_dict()
        state.update(best=self.best, bad_epochs=self.bad_epochs,
                     cooldown_left=self.cooldown_left)
        return state

    def _load_extra(self, state):
        best = state["best"]
        if isinstance(best, bool) or not isinstance(best, numbers.Real):
            raise ValueError(f"the state's best must be a number, got {best!r}")
        self.best = float(best)
        self.bad_epochs = _count(state["bad_epochs"], "bad_epochs", 0)
        self.cooldown_left = _count(state["cooldown_left"], "cooldown_left", 0)


def check_schedule(schedule, optimizer, validation=True):
    """`crnn.Trainer`'s `schedule`: None, a Schedule built on `optimizer`,
    or a callable that builds one from it (for a named optimizer).  With
    ``validation=False``, one that monitors "val_loss" is refused too."""
    if schedule is None:
        return None
    if not isinstance(schedule, Schedule) and callable(schedule):
        schedule = schedule(optimizer)
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule must be a crnn.optim schedule (StepLR, ...) "
                         f"or a callable that builds one from the optimizer, got "
                         f"{schedule!r}")
    if schedule.optimizer is not optimizer:
        raise ValueError(f"the schedule drives {schedule.optimizer!r}, not the "
                         f"trainer's optimizer {optimizer!r}: build it on "
                         f"trainer.optimizer (or pass a callable)")
    if not validation and getattr(schedule, "monitor", None) == "val_loss":
        raise ValueError(f"{schedule!r} monitors val_loss, and fit has no "
                         f"validation_data: pass some, or monitor='loss'")
    return schedule
