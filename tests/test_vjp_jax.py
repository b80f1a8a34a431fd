"""crnn.jax.lstm: crnn's LSTM as a jax.custom_vjp function.

Checked in float64 against an LSTM written here in pure JAX (lax.scan, the
equations of docs/model.md): outputs, final state and jax.grad with respect to
every parameter, X, h0 and c0, one and two layers, both directions; under
jax.jit and jax.vmap too.  Skipped without jax.

(Named to run after test_parallel.py: JAX starts threads, and that file's
os.fork() test should not fork a process that has them.)
"""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import crnn  # noqa: E402
import crnn.jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

N, T, D, H = 3, 5, 4, 6


def reference_lane(U, W, b, X, h0, c0):
    """One direction of one layer: X (N, T, D) -> hs (N, T, H), h_n, c_n."""
    def step(carry, x):
        h, c = carry
        z = x @ U.T + h @ W.T + b
        i, f, a, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(a)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h
    (h, c), hs = jax.lax.scan(step, (h0, c0), jnp.swapaxes(X, 0, 1))
    return jnp.swapaxes(hs, 0, 1), h, c


def reference_lstm(params, X, h0, c0, layers, bidirectional):
    suffixes = ("", "_reverse") if bidirectional else ("",)
    inputs, hs_n, cs_n = X, [], []
    for layer in range(layers):
        outputs = []
        for d, suffix in enumerate(suffixes):
            lane = layer * len(suffixes) + d
            U, W, b = (params[f"{k}{layer}{suffix}"] for k in "UWb")
            x = inputs if d == 0 else inputs[:, ::-1]
            hs, h, c = reference_lane(U, W, b, x, h0[lane], c0[lane])
            outputs.append(hs if d == 0 else hs[:, ::-1])
            hs_n.append(h)
            cs_n.append(c)
        inputs = jnp.concatenate(outputs, axis=-1)
    return inputs, (jnp.stack(hs_n), jnp.stack(cs_n))


def setup(layers, bidirectional, seed=0):
    model = crnn.LSTM(D, H, output=None, num_layers=layers, bidirectional=bidirectional,
                      dtype="float64", seed=seed)
    rng = np.random.default_rng(seed)
    lanes = layers * (2 if bidirectional else 1)
    X = rng.normal(size=(N, T, D))
    h0, c0 = rng.normal(scale=0.5, size=(2, lanes, N, H))
    weights = [rng.normal(size=s) for s in [(N, T, H * (2 if bidirectional else 1)),
                                            (lanes, N, H), (lanes, N, H)]]
    return model.params, X, h0, c0, weights


def scalar(function, weights):
    def loss(params, X, h0, c0):
        outputs, (h_n, c_n) = function(params, X, h0, c0)
        return ((outputs * weights[0]).sum() + (h_n * weights[1]).sum()
                + (c_n * weights[2]).sum())
    return loss


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (1, True), (2, True)])
def test_matches_jax_grad_of_a_pure_jax_lstm(layers, bidirectional):
    params, X, h0, c0, weights = setup(layers, bidirectional)
    outputs, (h_n, c_n) = crnn.jax.lstm(params, X, h0, c0)
    expected, (h_ref, c_ref) = reference_lstm(params, X, h0, c0, layers, bidirectional)
    for got, want in ((outputs, expected), (h_n, h_ref), (c_n, c_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

    def pure(p, x, h, c):
        return reference_lstm(p, x, h, c, layers, bidirectional)

    arguments = (0, 1, 2, 3)
    grads = jax.grad(scalar(crnn.jax.lstm, weights), arguments)(params, X, h0, c0)
    want = jax.grad(scalar(pure, weights), arguments)(params, X, h0, c0)
    for name in params:
        np.testing.assert_allclose(grads[0][name], want[0][name], rtol=1e-10,
                                   atol=1e-10, err_msg=name)
    for got, expected, name in zip(grads[1:], want[1:], ("X", "h0", "c0")):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, err_msg=name)


def test_vmap_with_shared_parameters_is_one_crnn_call(monkeypatch):
    params, X, h0, c0, _ = setup(2, True)
    calls = []
    one = crnn.jax._forward_one
    monkeypatch.setattr(crnn.jax, "_forward_one",
                        lambda *args: calls.append(args[1].shape) or one(*args))
    jax.vmap(lambda x: crnn.jax.lstm(params, x, h0, c0))(np.stack([X, X, X, X]))
    assert calls == [(4 * N, T, D)]


def test_under_jit_and_vmap():
    params, X, h0, c0, weights = setup(1, False)
    loss = scalar(crnn.jax.lstm, weights)
    eager = jax.grad(loss)(params, X, h0, c0)
    compiled = jax.jit(jax.grad(loss))(params, X, h0, c0)
    for name in params:
        np.testing.assert_allclose(compiled[name], eager[name], rtol=1e-12, atol=1e-12)
    # vmap over batches (one crnn call, the batches side by side), over
    # batches and states, over parameters (a call each), and of the gradient
    stacked, states = np.stack([X, X[::-1], 2 * X]), np.stack([h0, -h0, 0 * h0])
    others = [setup(1, False, seed=s)[0] for s in (1, 2, 3)]
    stacked_params = {k: np.stack([p[k] for p in others]) for k in params}

    def outputs(p, x, h):
        out, (h_n, c_n) = crnn.jax.lstm(p, x, h, c0)
        return out, h_n, c_n

    for axes, args, pick in (((None, 0, None), (params, stacked, h0),
                              lambda k: (params, stacked[k], h0)),
                             ((None, 0, 0), (params, stacked, states),
                              lambda k: (params, stacked[k], states[k])),
                             ((0, None, None), (stacked_params, X, h0),
                              lambda k: (others[k], X, h0))):
        mapped = jax.vmap(outputs, axes)(*args)
        for k in range(3):
            for got, want in zip(mapped, outputs(*pick(k))):
                np.testing.assert_allclose(got[k], want, rtol=1e-12, atol=1e-12)
    per_batch = jax.vmap(jax.grad(loss, (0, 1)), (None, 0, None, None))(params, stacked,
                                                                       h0, c0)
    for k in range(3):
        one = jax.grad(loss, (0, 1))(params, stacked[k], h0, c0)
        np.testing.assert_allclose(per_batch[1][k], one[1], rtol=1e-12, atol=1e-12)
        for name in params:
            np.testing.assert_allclose(per_batch[0][name][k], one[0][name], rtol=1e-12,
                                       atol=1e-12)


def test_float32_and_refusals():
    params32 = crnn.LSTM(D, H, output=None, seed=0).params
    X = np.ones((N, T, D), np.float32)
    h0 = np.zeros((1, N, H), np.float32)
    outputs, _ = crnn.jax.lstm(params32, X, h0, h0)
    assert outputs.dtype == jnp.float32 and outputs.shape == (N, T, H)
    with pytest.raises(ValueError, match=r"X must be \(N, T, 4\), got shape \(3, 5, 2\)"):
        crnn.jax.lstm(params32, X[..., :2], h0, h0)
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, 3, 6\)"):
        crnn.jax.lstm(params32, X, h0[:, :2], h0)
    with pytest.raises(TypeError, match="X must have the params' dtype float32"):
        crnn.jax.lstm(params32, X.astype(np.float64), h0, h0)
    with pytest.raises(ValueError, match=r"unexpected \['V', 'c'\]"):
        crnn.jax.lstm(crnn.LSTM(D, H, 3, seed=0).params, X, h0, h0)


@pytest.mark.parametrize("options,key,what", [
    (dict(peepholes=True), "P0", "peepholes"),
    (dict(proj_size=2), "R0", "a projection"),
    (dict(proj_size=2, bidirectional=True), "R0", "a projection")])
def test_refuses_the_lstm_variants_naming_the_key(options, key, what):
    # the keys of a peephole or projected crnn.LSTM: refused by name, before
    # any shape check or host call
    params = crnn.LSTM(D, H, output=None, seed=0, **options).params
    assert key in params
    X = np.ones((N, T, D), np.float32)
    h0 = np.zeros((1, N, H), np.float32)
    with pytest.raises(ValueError, match=rf"without {what} .*got the key '{key}'"):
        crnn.jax.lstm(params, X, h0, h0)
    # a lone variant key among a plain LSTM's is named as well
    plain = dict(crnn.LSTM(D, H, output=None, seed=0).params)
    plain[key + "_reverse"] = params[key]
    with pytest.raises(ValueError, match=rf"got the key '{key}_reverse'"):
        crnn.jax.lstm(plain, X, h0, h0)
