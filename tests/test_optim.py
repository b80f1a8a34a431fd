"""crnn.optim: each update rule against a closed-form numpy reference and
torch.optim, state save/resume, the overflow refusal, argument checks.

The numpy references below are torch.optim's documented algorithms written
out in float64; crnn computes in the parameter's dtype, hence the tolerance
by dtype.
"""
import math

import numpy as np
import pytest

import crnn
from crnn import optim

TOL = {np.float32: 2e-6, np.float64: 1e-13}
SHAPES = {"U0": (6, 4), "W0": (6, 6), "b0": (6,), "V": (3, 6), "c": (3,)}
STEPS = 3


def make_params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape).astype(dtype) for name, shape in SHAPES.items()}


def make_grads(dtype, steps=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return [{name: rng.normal(size=shape).astype(dtype) for name, shape in SHAPES.items()}
            for _ in range(steps)]


# ------------------------------------------------------------ numpy references

def ref_sgd(p, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    p, buf = p.astype(np.float64), None
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def ref_adam(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        d = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * d
        v = betas[1] * v + (1 - betas[1]) * d * d
        m_hat = m / (1 - betas[0] ** t)
        v_hat = v / (1 - betas[1] ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def ref_rmsprop(p, grads, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False):
    p = p.astype(np.float64)
    v = np.zeros_like(p)
    mean = np.zeros_like(p)
    buf = np.zeros_like(p)
    for g in grads:
        d = g + weight_decay * p
        v = alpha * v + (1 - alpha) * d * d
        if centered:
            mean = alpha * mean + (1 - alpha) * d
            avg = np.sqrt(v - mean * mean) + eps
        else:
            avg = np.sqrt(v) + eps
        if momentum > 0:
            buf = momentum * buf + d / avg
            p = p - lr * buf
        else:
            p = p - lr * d / avg
    return p


def ref_adagrad(p, grads, lr, lr_decay=0.0, weight_decay=0.0,
                initial_accumulator_value=0.0, eps=1e-10):
    p = p.astype(np.float64)
    s = np.full_like(p, initial_accumulator_value)
    for t, g in enumerate(grads, start=1):
        d = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + d * d
        p = p - clr * d / (np.sqrt(s) + eps)
    return p


# (id, crnn optimizer factory, numpy reference, torch class name, torch kwargs)
CONFIGS = [
    ("sgd", lambda: optim.SGD(0.1), lambda p, g: ref_sgd(p, g, 0.1),
     "SGD", dict(lr=0.1)),
    ("sgd-decay", lambda: optim.SGD(0.1, weight_decay=0.3),
     lambda p, g: ref_sgd(p, g, 0.1, weight_decay=0.3), "SGD", dict(lr=0.1, weight_decay=0.3)),
    ("momentum-dampening", lambda: optim.SGD(0.05, momentum=0.9, dampening=0.2),
     lambda p, g: ref_sgd(p, g, 0.05, momentum=0.9, dampening=0.2),
     "SGD", dict(lr=0.05, momentum=0.9, dampening=0.2)),
    ("nesterov", lambda: optim.SGD(0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
     lambda p, g: ref_sgd(p, g, 0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
     "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    ("adam", lambda: optim.Adam(0.01), lambda p, g: ref_adam(p, g, 0.01),
     "Adam", dict(lr=0.01)),
    ("adam-custom", lambda: optim.Adam(0.02, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1),
     lambda p, g: ref_adam(p, g, 0.02, (0.8, 0.99), 1e-3, 0.1),
     "Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1)),
    ("rmsprop", lambda: optim.RMSprop(0.01), lambda p, g: ref_rmsprop(p, g, 0.01),
     "RMSprop", dict(lr=0.01)),
    ("rmsprop-full", lambda: optim.RMSprop(0.01, alpha=0.9, eps=1e-6, weight_decay=0.05,
                                           momentum=0.5, centered=True),
     lambda p, g: ref_rmsprop(p, g, 0.01, 0.9, 1e-6, 0.05, 0.5, True),
     "RMSprop", dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=0.05, momentum=0.5,
                     centered=True)),
    ("adagrad", lambda: optim.Adagrad(0.1), lambda p, g: ref_adagrad(p, g, 0.1),
     "Adagrad", dict(lr=0.1)),
    ("adagrad-full", lambda: optim.Adagrad(0.1, lr_decay=0.5, weight_decay=0.2,
                                           initial_accumulator_value=0.3, eps=1e-6),
     lambda p, g: ref_adagrad(p, g, 0.1, 0.5, 0.2, 0.3, 1e-6),
     "Adagrad", dict(lr=0.1, lr_decay=0.5, weight_decay=0.2,
                     initial_accumulator_value=0.3, eps=1e-6)),
]
IDS = [config[0] for config in CONFIGS]


def run_crnn(factory, dtype, steps=STEPS):
    params = make_params(dtype)
    arrays = dict(params)                      # the very arrays must be updated
    optimizer = factory()
    for grads in make_grads(dtype, steps):
        optimizer.step(params, grads)
    for name in params:
        assert params[name] is arrays[name]
        assert params[name].dtype == dtype
    return params, optimizer


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_one_step_matches_closed_form(config, dtype):
    _, factory, reference, _, _ = config
    params, _ = run_crnn(factory, dtype, steps=1)
    start = make_params(dtype)
    grads = make_grads(dtype, 1)
    for name in SHAPES:
        expected = reference(start[name], [grads[0][name].astype(np.float64)])
        np.testing.assert_allclose(params[name], expected, rtol=TOL[dtype],
                                   atol=TOL[dtype], err_msg=name)
        assert not np.array_equal(params[name], start[name]), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_several_steps_match_closed_form(config, dtype):
    """State (momentum, moments, accumulators, step count) carries over."""
    _, factory, reference, _, _ = config
    params, optimizer = run_crnn(factory, dtype)
    assert optimizer.steps == STEPS
    start = make_params(dtype)
    grads = make_grads(dtype)
    for name in SHAPES:
        expected = reference(start[name], [g[name].astype(np.float64) for g in grads])
        np.testing.assert_allclose(params[name], expected, rtol=10 * TOL[dtype],
                                   atol=10 * TOL[dtype], err_msg=name)


def test_adam_first_step_is_lr_times_sign():
    """Adam's first step, closed form: p - lr·g/(|g| + eps) ≈ p - lr·sign(g)."""
    params = make_params(np.float64)
    start = {k: v.copy() for k, v in params.items()}
    grads = make_grads(np.float64, 1)[0]
    optim.Adam(lr=0.25, eps=0.0).step(params, grads)
    for name in SHAPES:
        np.testing.assert_allclose(params[name], start[name] - 0.25 * np.sign(grads[name]),
                                   rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_matches_torch_optim(config, dtype):
    torch = pytest.importorskip("torch")
    _, factory, _, torch_name, torch_kwargs = config
    params, _ = run_crnn(factory, dtype)
    torch_dtype = torch.float32 if dtype == np.float32 else torch.float64
    tensors = {name: torch.tensor(value, dtype=torch_dtype, requires_grad=True)
               for name, value in make_params(dtype).items()}
    torch_optimizer = getattr(torch.optim, torch_name)(list(tensors.values()), **torch_kwargs)
    for grads in make_grads(dtype):
        for name, tensor in tensors.items():
            tensor.grad = torch.tensor(grads[name], dtype=torch_dtype)
        torch_optimizer.step()
    for name, tensor in tensors.items():
        np.testing.assert_allclose(params[name], tensor.detach().numpy(),
                                   rtol=5 * TOL[dtype], atol=5 * TOL[dtype], err_msg=name)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_grad_scale_equals_scaled_gradients(config):
    _, factory, _, _, _ = config
    scaled_params, plain_params = make_params(np.float64), make_params(np.float64)
    scaled, plain = factory(), factory()
    for grads in make_grads(np.float64):
        scaled.step(scaled_params, grads, grad_scale=0.25)
        plain.step(plain_params, {k: 0.25 * v for k, v in grads.items()})
    for name in SHAPES:
        np.testing.assert_allclose(scaled_params[name], plain_params[name],
                                   rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_state_dict_resumes_exactly(config, tmp_path):
    """Two steps, save through numpy.savez, load into a fresh optimizer,
    one more step: bit-identical to three uninterrupted steps."""
    _, factory, _, _, _ = config
    grads = make_grads(np.float32)
    straight_params, straight = make_params(np.float32), factory()
    for g in grads:
        straight.step(straight_params, g)

    params, first = make_params(np.float32), factory()
    for g in grads[:2]:
        first.step(params, g)
    state = first.state_dict()
    assert state["type"] == type(first).__name__ and state["step"] == 2
    np.savez(tmp_path / "state.npz", **state)
    resumed_params = {k: v.copy() for k, v in params.items()}
    # state_dict returns copies: later steps do not leak into it
    first.step(params, {k: 100 * v for k, v in grads[2].items()})

    from_file, from_dict = factory(), factory()
    with np.load(tmp_path / "state.npz") as loaded:
        from_file.load_state_dict(loaded)
    from_dict.load_state_dict(state)
    assert from_file.steps == from_dict.steps == 2
    dict_params = {k: v.copy() for k, v in resumed_params.items()}
    from_file.step(resumed_params, grads[2])
    from_dict.step(dict_params, grads[2])
    for name in SHAPES:
        np.testing.assert_array_equal(dict_params[name], straight_params[name])
    for name in SHAPES:
        np.testing.assert_array_equal(resumed_params[name], straight_params[name])


def test_load_state_dict_restores_hyperparameters():
    source = optim.Adam(lr=0.05, betas=(0.5, 0.75), eps=1e-4, weight_decay=0.1)
    source.step(make_params(np.float64), make_grads(np.float64, 1)[0])
    target = optim.Adam()
    target.load_state_dict(source.state_dict())
    assert (target.lr, target.betas, target.eps, target.weight_decay) == \
        (0.05, (0.5, 0.75), 1e-4, 0.1)


def test_load_state_dict_rejects_bad_state():
    state = optim.Adam().state_dict()
    with pytest.raises(ValueError, match="'Adam'.*'SGD'"):
        optim.SGD().load_state_dict(state)
    with pytest.raises(ValueError, match="missing"):
        optim.Adam().load_state_dict({"type": "Adam", "lr": 0.1})
    with pytest.raises(ValueError, match="unexpected entry 'velocity.W0'"):
        optim.Adam().load_state_dict(dict(state, **{"velocity.W0": np.zeros(3)}))
    with pytest.raises(ValueError, match="lr must be"):
        optim.Adam().load_state_dict(dict(state, lr=-1.0))
    with pytest.raises(TypeError, match="must be a dict"):
        optim.Adam().load_state_dict([1, 2])
    target = optim.Adam(lr=0.5)
    with pytest.raises(ValueError):
        target.load_state_dict(dict(state, eps=-1.0))
    assert target.lr == 0.5          # a refused state changes nothing


def test_loaded_state_of_wrong_shape_is_refused_at_step():
    source = optim.Adam()
    params = make_params(np.float64)
    source.step(params, make_grads(np.float64, 1)[0])
    state = source.state_dict()
    state["exp_avg.W0"] = np.zeros((2, 2))
    target = optim.Adam()
    target.load_state_dict(state)
    with pytest.raises(ValueError, match="'exp_avg' state for 'W0' has shape"):
        target.step(params, make_grads(np.float64, 1)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_overflowing_update_is_refused_and_changes_nothing(dtype):
    params = make_params(dtype)
    before = {k: v.copy() for k, v in params.items()}
    optimizer = optim.SGD(lr=1e300 if dtype == np.float64 else 1e38, momentum=0.9)
    grads = {k: np.full_like(v, 1e10) for k, v in params.items()}
    with pytest.raises(FloatingPointError, match="non-finite.*nothing was changed"):
        optimizer.step(params, grads)
    for name in SHAPES:
        np.testing.assert_array_equal(params[name], before[name])
    assert optimizer.steps == 0
    # a sane step afterwards starts from an untouched state (momentum buffer = d)
    optimizer.lr = 0.1
    small = make_grads(dtype, 1)[0]
    optimizer.step(params, small)
    for name in SHAPES:
        np.testing.assert_allclose(params[name], before[name] - 0.1 * small[name],
                                   rtol=TOL[dtype], atol=TOL[dtype])


def test_step_checks_its_arguments():
    params, grads = make_params(np.float64), make_grads(np.float64, 1)[0]
    with pytest.raises(ValueError, match="missing \\['c'\\]"):
        optim.SGD().step(params, {k: v for k, v in grads.items() if k != "c"})
    with pytest.raises(ValueError, match="grads\\['W0'\\] must have shape \\(6, 6\\), got \\(6, 5\\)"):
        optim.SGD().step(params, dict(grads, W0=np.zeros((6, 5))))
    with pytest.raises(TypeError, match="one dtype"):
        optim.SGD().step(dict(params, c=params["c"].astype(np.float32)), grads)
    with pytest.raises(ValueError, match="C-contiguous"):
        optim.SGD().step(dict(params, W0=np.asfortranarray(params["W0"][:, :5])),
                         dict(grads, W0=grads["W0"][:, :5]))
    with pytest.raises(TypeError, match="dicts"):
        optim.SGD().step(list(params.values()), grads)
    optimizer = optim.Adam()
    optimizer.step(params, grads)
    smaller = {k: v for k, v in params.items() if k != "c"}
    with pytest.raises(ValueError, match="reset\\(\\)"):
        optimizer.step(smaller, {k: grads[k] for k in smaller})
    optimizer.reset()
    optimizer.step(smaller, {k: grads[k] for k in smaller})
    assert optimizer.steps == 1


@pytest.mark.parametrize("make, error, message", [
    (lambda: optim.SGD(lr=-0.1), ValueError, "lr must be a finite number >= 0, got -0.1"),
    (lambda: optim.SGD(lr="fast"), TypeError, "lr must be a real number, got 'fast'"),
    (lambda: optim.SGD(lr=float("nan")), ValueError, "lr must be a finite number"),
    (lambda: optim.SGD(momentum=-1), ValueError, "momentum must be"),
    (lambda: optim.SGD(nesterov=True), ValueError, "nesterov momentum needs momentum > 0"),
    (lambda: optim.SGD(nesterov="yes"), TypeError, "nesterov must be True or False"),
    (lambda: optim.Adam(betas=(0.9, 1.0)), ValueError, "betas\\[1\\] must be .*< 1, got 1.0"),
    (lambda: optim.Adam(betas=0.9), TypeError, "betas must be a pair"),
    (lambda: optim.Adam(eps=-1e-8), ValueError, "eps must be"),
    (lambda: optim.Adam(weight_decay=-0.1), ValueError, "weight_decay must be"),
    (lambda: optim.RMSprop(centered=1), TypeError, "centered must be True or False"),
    (lambda: optim.Adagrad(lr_decay=-1), ValueError, "lr_decay must be"),
    (lambda: optim.get("adamw"), ValueError, "'adagrad', 'adam', .*got 'adamw'"),
    (lambda: optim.get(3), TypeError, "optimizer must be one of"),
])
def test_bad_hyperparameters_raise(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_lr_can_be_changed_between_steps():
    optimizer = optim.SGD(lr=0.1)
    optimizer.lr = 0.2
    assert optimizer.lr == 0.2
    with pytest.raises(ValueError, match="lr must be"):
        optimizer.lr = -1
    assert optimizer.lr == 0.2


@pytest.mark.parametrize("name, kind, settings", [
    ("sgd", optim.SGD, {"momentum": 0.0}),
    ("momentum", optim.SGD, {"momentum": 0.9}),
    ("adam", optim.Adam, {}),
    ("RMSprop", optim.RMSprop, {}),
    ("adagrad", optim.Adagrad, {}),
])
def test_get_by_name(name, kind, settings):
    optimizer = optim.get(name, lr=0.25, weight_decay=0.5)
    assert type(optimizer) is kind
    assert optimizer.lr == 0.25 and optimizer.weight_decay == 0.5
    for key, value in settings.items():
        assert getattr(optimizer, key) == value
    same = kind()
    assert optim.get(same) is same


def test_updates_model_params_in_place():
    model = crnn.LSTM(3, 4, 2, seed=0)
    before = {k: v.copy() for k, v in model.params.items()}
    X = np.random.default_rng(0).normal(size=(2, 5, 3))
    y = np.array([[0, 1, 0, 1, 1], [1, 1, 0, 0, 1]])
    _, grads = model.loss_and_grad(X, y)
    optim.SGD(lr=0.5).step(model.params, grads)
    for name, value in model.params.items():
        np.testing.assert_allclose(value, before[name] - np.float32(0.5) * grads[name],
                                   rtol=1e-6, atol=1e-7)


def test_empty_and_single_element_arrays():
    params = {"a": np.zeros(0), "b": np.array([2.0])}
    grads = {"a": np.zeros(0), "b": np.array([0.5])}
    optim.Adagrad(lr=1.0, eps=0.0).step(params, grads)   # s = 0.25: p = 2 - 0.5/0.5
    assert params["a"].shape == (0,)
    assert math.isclose(float(params["b"][0]), 1.0, rel_tol=1e-15)


# ------------------------------------------------------------ states of other shapes (issue 21)
def _adam_state():
    adam = optim.Adam()
    adam.step(make_params(np.float64), make_grads(np.float64, 1)[0])
    return adam.state_dict()


def test_load_state_dict_refuses_one_parameter_of_two_shapes():
    state = _adam_state()
    state["exp_avg_sq.W0"] = np.zeros((6, 5))
    target = optim.Adam(lr=0.5)
    with pytest.raises(ValueError, match=r"\(6, 5\).*\(6, 6\)|\(6, 6\).*\(6, 5\)"):
        target.load_state_dict(state, params=make_params(np.float64))
    assert target.lr == 0.5 and target.steps == 0       # nothing was loaded


@pytest.mark.parametrize("change,needle", [
    ({"W0": np.zeros((6, 5))}, "(6, 5)"),
    ({"missing": None}, "lacks"),
])
def test_load_state_dict_checks_against_params(change, needle):
    params = make_params(np.float64)
    if "missing" in change:
        del params["V"]
    else:
        params.update(change)
    target = optim.Adam()
    with pytest.raises(ValueError) as error:
        target.load_state_dict(_adam_state(), params=params)
    assert needle in str(error.value)
    target.load_state_dict(_adam_state(), params=make_params(np.float64))
    assert target.steps == 1


def test_a_loaded_state_of_other_shapes_is_refused_before_any_update():
    state = {key: (np.zeros((2, 2)) if key.endswith(".W0") else value)
             for key, value in _adam_state().items()}
    target = optim.Adam()
    target.load_state_dict(state)
    params = make_params(np.float64)
    before = {k: v.copy() for k, v in params.items()}
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        target.step(params, make_grads(np.float64, 1)[0])
    for name, value in before.items():
        np.testing.assert_array_equal(params[name], value)
