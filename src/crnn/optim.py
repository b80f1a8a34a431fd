"""crnn.optim: the optimizers crnn.Trainer uses, with torch.optim's semantics.

Each optimizer updates a model's parameter arrays in place, from a dict of
gradients with the same keys, through the fused loops of ``_optim.pyx`` (one
pass per array, no temporaries, GIL released).  The update rules,
defaults and ``weight_decay`` (an L2 term added to the gradient, not
AdamW's decoupled decay) are those of ``torch.optim.SGD``, ``Adam``,
``RMSprop`` and ``Adagrad``.

State lives in the optimizer, keyed by parameter name, created on the first
``step``.  ``state_dict()`` returns a flat dict of scalars and numpy arrays
(``"type"``, the hyperparameters, ``"step"`` and ``"<buffer>.<param>"``
arrays) that ``numpy.savez`` can store; ``load_state_dict`` takes it back
(also as loaded by ``numpy.load``) to resume training exactly.

Learning-rate schedules (``StepLR``, ``ExponentialLR``,
``CosineWithWarmup``, ``ReduceLROnPlateau``) live in ``_schedules``.
"""
import math
import numbers

import numpy as np

from . import _optim
from ._schedules import (CosineWithWarmup, ExponentialLR, ReduceLROnPlateau,
                         Schedule, StepLR)

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "Adagrad", "get", "Schedule",
           "StepLR", "ExponentialLR", "CosineWithWarmup", "ReduceLROnPlateau"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_number(value, name, minimum=None, below=None, above=None):
    """`value` as a float, checked: a real number, finite, >= minimum,
    < below, > above (each bound optional)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    wanted = []
    if minimum is not None:
        wanted.append(f">= {minimum}")
    if above is not None:
        wanted.append(f"> {above}")
    if below is not None:
        wanted.append(f"< {below}")
    if (not math.isfinite(value)
            or (minimum is not None and value < minimum)
            or (above is not None and value <= above)
            or (below is not None and value >= below)):
        raise ValueError(
            f"{name} must be a finite number {' and '.join(wanted)}, got {value!r}")
    return value


def _scalar(value):
    """A scalar from a state dict entry (numpy.load gives 0-d arrays)."""
    if isinstance(value, np.ndarray) and value.shape == ():
        return value.item()
    return value


def _check_state_shapes(buffers, params):
    """With `params`: one shape per parameter across the buffers, the
    parameter's own (without, ``step`` checks them before any update)."""
    if params is None:
        return
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of arrays or None, got {type(params).__name__}")
    shapes = {}
    for buffer, arrays in buffers.items():
        for name, array in arrays.items():
            first = shapes.setdefault(name, (buffer, array.shape))
            if first[1] != array.shape:
                raise ValueError(
                    f"state[{buffer + '.' + name!r}] has shape {array.shape}, "
                    f"state[{first[0] + '.' + name!r}] {first[1]}: one parameter's "
                    f"state arrays must have one shape")
    for name, (buffer, shape) in shapes.items():
        if name not in params:
            raise ValueError(f"state has arrays for {name!r}, which params lacks "
                             f"(params has {sorted(params)})")
        expected = np.shape(params[name])
        if shape != expected:
            raise ValueError(f"state[{buffer + '.' + name!r}] has shape {shape}, "
                             f"the parameter {name!r} has shape {expected}")


class Optimizer:
    """The base class of crnn's optimizers.

    An optimizer updates a model's parameter arrays in place from a dict of
    gradients with the same keys (what ``model.loss_and_grad`` returns).
    Its state (momentum buffers, moments) is created on the first `step`,
    keyed by parameter name; an optimizer then belongs to that set of
    names until `reset`.

    Parameters
    ----------
    lr : float
        The learning rate, >= 0.
    weight_decay : float, default 0.0
        An L2 penalty: ``weight_decay * p`` is added to every gradient
        before the update (PyTorch's ``weight_decay``, not AdamW's).

    Notes
    -----
    Subclasses define ``_buffers(self)`` (the names of the per-parameter
    state arrays in use), ``_hyper`` (hyperparameter names, in the state
    dict) and ``_update(params, grads, state, grad_scale, apply)``, which
    calls one function of ``_optim`` for all arrays.
    """

    _hyper = ()

    def __init__(self, lr, weight_decay=0.0):
        self.lr = lr
        self.weight_decay = _check_number(weight_decay, "weight_decay", minimum=0)
        self._names = None     # parameter names the state belongs to
        self._state = {}       # buffer name -> {param name -> array}
        self._step = 0         # completed steps

    # --------------------------------------------------------------- lr
    @property
    def lr(self):
        """The learning rate; may be changed between steps (schedules)."""
        return self._lr

    @lr.setter
    def lr(self, value):
        self._lr = _check_number(value, "lr", minimum=0)

    @property
    def steps(self):
        """Number of completed steps."""
        return self._step

    # --------------------------------------------------------------- step
    def _buffers(self):
        return ()

    def _initial_value(self, buffer):
        return 0.0

    def _check_arrays(self, params, grads):
        """Validate params and grads; return names and matching lists."""
        if not isinstance(params, dict) or not isinstance(grads, dict):
            raise TypeError(
                f"params and grads must be dicts of arrays, got "
                f"{type(params).__name__} and {type(grads).__name__}")
        names = list(params)
        if not names:
            raise ValueError("params must hold at least one array, got an empty dict")
        if set(grads) != set(names):
            raise ValueError(
                f"grads must have exactly the keys of params {sorted(names)}; "
                f"missing {sorted(set(names) - set(grads))}, "
                f"unexpected {sorted(set(grads) - set(names))}")
        if self._names is not None and names != self._names:
            raise ValueError(
                f"this optimizer holds state for the parameters {self._names}, "
                f"got {names}; call reset() to start over with other parameters")
        param_list, grad_list = [], []
        dtype = None
        for name in names:
            param = params[name]
            if not isinstance(param, np.ndarray) or param.dtype not in _DTYPES:
                raise TypeError(
                    f"params[{name!r}] must be a float32 or float64 numpy array, "
                    f"got {type(param).__name__}"
                    f"{' of dtype ' + str(param.dtype) if isinstance(param, np.ndarray) else ''}")
            if dtype is None:
                dtype = param.dtype
            elif param.dtype != dtype:
                raise TypeError(
                    f"every parameter must have one dtype; params[{name!r}] is "
                    f"{param.dtype}, the others {dtype}")
            if not (param.flags.c_contiguous and param.flags.writeable):
                raise ValueError(
                    f"params[{name!r}] must be a writeable C-contiguous array "
                    f"(it is updated in place)")
            grad = np.asarray(grads[name])
            if grad.shape != param.shape:
                raise ValueError(
                    f"grads[{name!r}] must have shape {param.shape}, got {grad.shape}")
            if grad.dtype.kind not in "iuf":
                raise TypeError(
                    f"grads[{name!r}] must hold real numbers, got dtype {grad.dtype}")
            param_list.append(param)
            grad_list.append(np.ascontiguousarray(grad, dtype=dtype))
        return names, param_list, grad_list

    def _state_lists(self, names, param_list):
        """The state arrays, created (or cast after a load) to match params."""
        for buffer in self._buffers():
            arrays = self._state.setdefault(buffer, {})
            for name, param in zip(names, param_list):
                array = arrays.get(name)
                if array is None:
                    arrays[name] = np.full_like(param, self._initial_value(buffer))
                elif array.shape != param.shape:
                    raise ValueError(
                        f"the optimizer's {buffer!r} state for {name!r} has shape "
                        f"{array.shape}, the parameter has shape {param.shape}")
                elif array.dtype != param.dtype or not array.flags.c_contiguous:
                    arrays[name] = np.ascontiguousarray(array, dtype=param.dtype)
        return {buffer: [self._state[buffer][name] for name in names]
                for buffer in self._buffers()}

    def step(self, params, grads, grad_scale=1.0):
        """Apply one update to every parameter, in place.

        One fused compiled loop per array, in the parameters' dtype, with
        the GIL released.

        Parameters
        ----------
        params : dict of numpy.ndarray
            The arrays to update (a model's ``params``): float32 or
            float64, C-contiguous and writeable.
        grads : dict of numpy.ndarray
            The gradients: the same keys, shapes and dtypes.
        grad_scale : float, default 1.0
            Multiplies the gradients first (the trainer's clipping).

        Raises
        ------
        FloatingPointError
            The update would make a parameter non-finite (a learning rate
            far too large); nothing was changed, the step count included.
        TypeError, ValueError
            Mismatched keys, shapes or dtypes, or parameter names other
            than those the state belongs to.

        Examples
        --------
        >>> params = {"w": np.array([1.0, -2.0])}
        >>> opt = crnn.optim.SGD(lr=0.5)
        >>> opt.step(params, {"w": np.array([1.0, 1.0])})
        >>> params["w"].tolist(), opt.steps
        ([0.5, -2.5], 1)
        """
        grad_scale = _check_number(grad_scale, "grad_scale", minimum=0)
        names, param_list, grad_list = self._check_arrays(params, grads)
        fresh = not self._state or self._names is None
        state = self._state_lists(names, param_list)
        if not self._update(param_list, grad_list, state, grad_scale, fresh, apply=False):
            bad = [name for name, param, grad in zip(names, param_list, grad_list)
                   if not self._update([param], [grad],
                                       {k: [v[names.index(name)]] for k, v in state.items()},
                                       grad_scale, fresh, apply=False)]
            raise FloatingPointError(
                f"the {type(self).__name__} update would make {bad} non-finite "
                f"(is lr = {self.lr:g} too large?); nothing was changed")
        self._update(param_list, grad_list, state, grad_scale, fresh, apply=True)
        self._names = names
        self._step += 1

    def reset(self):
        """Forget all state: buffers, moments and the step count."""
        self._names = None
        self._state = {}
        self._step = 0

    # --------------------------------------------------------------- state
    def state_dict(self):
        """The optimizer's settings and state, to save and resume.

        Returns
        -------
        dict
            ``"type"`` (the class name), the hyperparameters, ``"step"``,
            and a copy of every state array as ``"<buffer>.<param>"``
            (for example ``"exp_avg.W0"``).  ``numpy.savez`` can store it.

        Examples
        --------
        >>> opt = crnn.optim.Adam(lr=0.01)
        >>> opt.step({"w": np.ones(3)}, {"w": np.ones(3)})
        >>> state = opt.state_dict()
        >>> state["type"], state["step"], sorted(k for k in state if "." in k)
        ('Adam', 1, ['exp_avg.w', 'exp_avg_sq.w'])
        >>> again = crnn.optim.Adam()
        >>> again.load_state_dict(state)
        >>> again.lr, again.steps
        (0.01, 1)
        """
        state = {"type": type(self).__name__, "lr": self.lr,
                 "weight_decay": self.weight_decay}
        for name in self._hyper:
            state[name] = getattr(self, name)
        state["step"] = self._step
        for buffer, arrays in self._state.items():
            for name, array in arrays.items():
                state[f"{buffer}.{name}"] = array.copy()
        return state

    def load_state_dict(self, state, params=None):
        """Restore the settings and state that `state_dict` returned.

        Parameters
        ----------
        state : mapping
            A dict from `state_dict`, or the same read back by
            ``numpy.load``.
        params : dict of numpy.ndarray, optional
            The arrays the optimizer will update (``model.params``): with
            them the state arrays are checked now, one shape per parameter,
            that parameter's; without them, at the first `step`, before any
            update.

        Raises
        ------
        TypeError
            `state` is not a mapping, a state array is not float32 or
            float64, or `params` is not a dict.
        ValueError
            The state is another optimizer's, an entry is missing or
            unexpected, a value is out of range, NaN or infinite, or (with
            `params`) a state array's shape is not its parameter's.
        """
        if not hasattr(state, "keys"):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        state = {key: state[key] for key in state.keys()}
        kind = _scalar(state.get("type"))
        if kind != type(self).__name__:
            raise ValueError(
                f"state is for a {kind!r} optimizer, this one is "
                f"{type(self).__name__!r}")
        scalars = ("lr", "weight_decay") + tuple(self._hyper) + ("step",)
        missing = [key for key in scalars if key not in state]
        if missing:
            raise ValueError(f"state is missing the entries {missing}")
        buffers = {}
        allowed = set(self._all_buffers())
        for key, value in state.items():
            if key in scalars or key == "type":
                continue
            buffer, _, name = key.partition(".")
            if buffer not in allowed or not name:
                raise ValueError(
                    f"unexpected entry {key!r} in state; state arrays are named "
                    f"'<buffer>.<param>' with buffer in {sorted(allowed)}")
            array = np.asarray(value)
            if array.dtype not in _DTYPES:
                raise TypeError(
                    f"state[{key!r}] must be a float32 or float64 array, "
                    f"got dtype {array.dtype}")
            if not np.isfinite(array).all():
                raise ValueError(f"state[{key!r}] contains NaN or infinity")
            buffers.setdefault(buffer, {})[name] = np.array(array, copy=True)
        names = None
        for buffer, arrays in buffers.items():
            if names is None:
                names = list(arrays)
            elif set(arrays) != set(names):
                raise ValueError(
                    f"state arrays must cover the same parameters; {buffer!r} has "
                    f"{sorted(arrays)}, others {sorted(names)}")
        _check_state_shapes(buffers, params)
        step = _scalar(state["step"])
        if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral) \
                or step < 0:
            raise ValueError(f"state['step'] must be an integer >= 0, got {step!r}")
        # Check every hyperparameter on a scratch copy, then commit them all.
        trial = type(self).__new__(type(self))
        trial.__dict__.update(self.__dict__)
        trial.lr = _scalar(state["lr"])
        trial.weight_decay = _check_number(_scalar(state["weight_decay"]),
                                           "weight_decay", minimum=0)
        trial._set_hyper({name: state[name] for name in self._hyper})
        if set(buffers) != set(trial._buffers()) and (buffers or step):
            raise ValueError(
                f"state holds the buffers {sorted(buffers)}, this optimizer's "
                f"settings use {sorted(trial._buffers())}")
        self.__dict__.update(trial.__dict__)
        self._state = buffers
        self._names = names
        self._step = int(step)

    def _all_buffers(self):
        return self._buffers()

    def _set_hyper(self, values):
        raise NotImplementedError

    def __repr__(self):
        settings = ", ".join(f"{name}={getattr(self, name)!r}"
                             for name in ("lr",) + tuple(self._hyper) + ("weight_decay",))
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum.

    PyTorch's ``torch.optim.SGD``.  For a parameter p with gradient g::

        d = g + weight_decay·p
        b = d (first step), then momentum·b + (1 - dampening)·d
        p -= lr·(d + momentum·b) with nesterov, lr·b with momentum, else lr·d

    Parameters
    ----------
    lr : float, default 1e-3
        The learning rate.
    momentum : float, default 0.0
        The momentum factor.
    nesterov : bool, default False
        Nesterov momentum (needs a momentum above 0 and no dampening).
    weight_decay : float, default 0.0
        The L2 penalty added to the gradient.
    dampening : float, default 0.0
        Scales the new gradient in the momentum buffer by ``1 - dampening``.

    Examples
    --------
    >>> opt = crnn.optim.SGD(lr=0.1, momentum=0.9, nesterov=True)
    >>> opt
    SGD(lr=0.1, momentum=0.9, dampening=0.0, nesterov=True, weight_decay=0.0)
    """

    _hyper = ("momentum", "dampening", "nesterov")

    def __init__(self, lr=1e-3, momentum=0.0, nesterov=False, weight_decay=0.0,
                 dampening=0.0):
        super().__init__(lr, weight_decay)
        self._set_hyper({"momentum": momentum, "dampening": dampening,
                         "nesterov": nesterov})

    def _set_hyper(self, values):
        momentum = _check_number(_scalar(values["momentum"]), "momentum", minimum=0)
        dampening = _check_number(_scalar(values["dampening"]), "dampening", minimum=0)
        nesterov = _scalar(values["nesterov"])
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                f"nesterov momentum needs momentum > 0 and dampening = 0, got "
                f"momentum={momentum}, dampening={dampening}")
        self.momentum, self.dampening, self.nesterov = momentum, dampening, bool(nesterov)

    def _buffers(self):
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _all_buffers(self):
        return ("momentum_buffer",)

    def _update(self, params, grads, state, grad_scale, fresh, apply):
        buffers = state.get("momentum_buffer")
        return _optim.sgd(params, grads, buffers, dict(
            lr=self.lr, momentum=self.momentum, dampening=self.dampening,
            weight_decay=self.weight_decay, grad_scale=grad_scale,
            nesterov=self.nesterov, first=fresh, apply=apply))


class Adam(Optimizer):
    """Adam.

    PyTorch's ``torch.optim.Adam`` (without amsgrad).  With t the step
    number::

        d = g + weight_decay·p
        m = β1·m + (1 - β1)·d          v = β2·v + (1 - β2)·d²
        p -= lr/(1 - β1^t) · m / (sqrt(v)/sqrt(1 - β2^t) + eps)

    Parameters
    ----------
    lr : float, default 1e-3
        The learning rate.
    betas : tuple of float, default (0.9, 0.999)
        β1 and β2, the decay rates of the two moments, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator.
    weight_decay : float, default 0.0
        The L2 penalty added to the gradient.
    """

    _hyper = ("betas", "eps")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr, weight_decay)
        self._set_hyper({"betas": betas, "eps": eps})

    def _set_hyper(self, values):
        betas = values["betas"]
        betas = tuple(np.asarray(betas).tolist()) if isinstance(betas, np.ndarray) else betas
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_check_number(betas[0], "betas[0]", minimum=0, below=1),
                      _check_number(betas[1], "betas[1]", minimum=0, below=1))
        self.eps = _check_number(_scalar(values["eps"]), "eps", minimum=0)

    def _buffers(self):
        return ("exp_avg", "exp_avg_sq")

    def _update(self, params, grads, state, grad_scale, fresh, apply):
        beta1, beta2 = self.betas
        t = self._step + 1
        step_size = self.lr / (1 - beta1 ** t)
        correction2_sqrt = math.sqrt(1 - beta2 ** t)
        return _optim.adam(params, grads, state["exp_avg"], state["exp_avg_sq"], dict(
            beta1=beta1, beta2=beta2, eps=self.eps, step_size=step_size,
            correction2_sqrt=correction2_sqrt, weight_decay=self.weight_decay,
            grad_scale=grad_scale, apply=apply))


class RMSprop(Optimizer):
    """RMSprop.

    PyTorch's ``torch.optim.RMSprop``::

        d = g + weight_decay·p
        v = α·v + (1 - α)·d²
        a = sqrt(v - ḡ²) + eps with ḡ = α·ḡ + (1 - α)·d (centered), else sqrt(v) + eps
        p -= lr·b with b = momentum·b + d/a (momentum > 0), else lr·d/a

    Parameters
    ----------
    lr : float, default 1e-2
        The learning rate.
    alpha : float, default 0.99
        The decay rate of the squared-gradient average.
    eps : float, default 1e-8
        Added to the denominator.
    weight_decay : float, default 0.0
        The L2 penalty added to the gradient.
    momentum : float, default 0.0
        The momentum factor.
    centered : bool, default False
        Divide by the gradient's estimated variance rather than its mean
        square.
    """

    _hyper = ("alpha", "eps", "momentum", "centered")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0,
                 momentum=0.0, centered=False):
        super().__init__(lr, weight_decay)
        self._set_hyper({"alpha": alpha, "eps": eps, "momentum": momentum,
                         "centered": centered})

    def _set_hyper(self, values):
        self.alpha = _check_number(_scalar(values["alpha"]), "alpha", minimum=0)
        self.eps = _check_number(_scalar(values["eps"]), "eps", minimum=0)
        self.momentum = _check_number(_scalar(values["momentum"]), "momentum", minimum=0)
        centered = _scalar(values["centered"])
        if not isinstance(centered, (bool, np.bool_)):
            raise TypeError(f"centered must be True or False, got {centered!r}")
        self.centered = bool(centered)

    def _buffers(self):
        return (("square_avg",) + (("grad_avg",) if self.centered else ())
                + (("momentum_buffer",) if self.momentum > 0 else ()))

    def _all_buffers(self):
        return ("square_avg", "grad_avg", "momentum_buffer")

    def _update(self, params, grads, state, grad_scale, fresh, apply):
        return _optim.rmsprop(params, grads, state["square_avg"],
                              state.get("grad_avg"), state.get("momentum_buffer"), dict(
            lr=self.lr, alpha=self.alpha, eps=self.eps, momentum=self.momentum,
            weight_decay=self.weight_decay, grad_scale=grad_scale, apply=apply))


class Adagrad(Optimizer):
    """Adagrad.

    PyTorch's ``torch.optim.Adagrad``.  With t the step number::

        d = g + weight_decay·p
        s = s + d²                     (s starts at initial_accumulator_value)
        p -= lr/(1 + (t - 1)·lr_decay) · d / (sqrt(s) + eps)

    Parameters
    ----------
    lr : float, default 1e-2
        The learning rate.
    lr_decay : float, default 0.0
        The learning rate's decay per step.
    weight_decay : float, default 0.0
        The L2 penalty added to the gradient.
    initial_accumulator_value : float, default 0.0
        The starting value of the sum of squares.
    eps : float, default 1e-10
        Added to the denominator.
    """

    _hyper = ("lr_decay", "eps", "initial_accumulator_value")

    def __init__(self, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(lr, weight_decay)
        self._set_hyper({"lr_decay": lr_decay, "eps": eps,
                         "initial_accumulator_value": initial_accumulator_value})

    def _set_hyper(self, values):
        self.lr_decay = _check_number(_scalar(values["lr_decay"]), "lr_decay", minimum=0)
        self.eps = _check_number(_scalar(values["eps"]), "eps", minimum=0)
        self.initial_accumulator_value = _check_number(
            _scalar(values["initial_accumulator_value"]),
            "initial_accumulator_value", minimum=0)

    def _buffers(self):
        return ("sum",)

    def _initial_value(self, buffer):
        return self.initial_accumulator_value

    def _update(self, params, grads, state, grad_scale, fresh, apply):
        clr = self.lr / (1 + self._step * self.lr_decay)
        return _optim.adagrad(params, grads, state["sum"], dict(
            lr=clr, eps=self.eps, weight_decay=self.weight_decay,
            grad_scale=grad_scale, apply=apply))


_BY_NAME = {
    "sgd": lambda lr, weight_decay: SGD(lr, weight_decay=weight_decay),
    "momentum": lambda lr, weight_decay: SGD(lr, momentum=0.9, weight_decay=weight_decay),
    "adam": lambda lr, weight_decay: Adam(lr, weight_decay=weight_decay),
    "rmsprop": lambda lr, weight_decay: RMSprop(lr, weight_decay=weight_decay),
    "adagrad": lambda lr, weight_decay: Adagrad(lr, weight_decay=weight_decay),
}


def get(optimizer, lr=1e-3, weight_decay=0.0):
    """The optimizer that a name stands for, as `crnn.Trainer` builds it.

    Parameters
    ----------
    optimizer : str or Optimizer
        ``"sgd"``, ``"momentum"`` (SGD with momentum 0.9), ``"adam"``,
        ``"rmsprop"`` or ``"adagrad"``, in any case; an `Optimizer` object
        is returned as it is.
    lr : float, default 1e-3
        The learning rate of a named optimizer.
    weight_decay : float, default 0.0
        The L2 penalty of a named optimizer.

    Returns
    -------
    Optimizer

    Raises
    ------
    TypeError
        `optimizer` is neither a string nor an optimizer.
    ValueError
        An unknown name.

    Examples
    --------
    >>> crnn.optim.get("Momentum", lr=0.1)
    SGD(lr=0.1, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0)
    """
    if isinstance(optimizer, Optimizer):
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(
            f"optimizer must be one of {sorted(_BY_NAME)} or a crnn.optim "
            f"optimizer object, got {optimizer!r}")
    make = _BY_NAME.get(optimizer.lower())
    if make is None:
        raise ValueError(
            f"optimizer must be one of {sorted(_BY_NAME)} or a crnn.optim "
            f"optimizer object, got {optimizer!r}")
    return make(lr, weight_decay)
