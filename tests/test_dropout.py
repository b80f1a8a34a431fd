"""Dropout (``dropout``, ``recurrent_dropout``, ``output_dropout``):
variational masks, one per sequence and layer held for every step, kept
units scaled by 1/(1-p), active only in ``loss_and_grad(training=True)``.

Checked against the float64 numpy reference given the same masks
(``crnn._dropout.draw_masks``, the hook loss_and_grad draws them with),
against central finite differences at a fixed ``dropout_seed``, and for
p = 0 and for every inference path bit for bit against a model without
dropout."""
import io as _io
import json
import pickle
import warnings

import numpy as np
import pytest

import crnn
from crnn import _dropout
from reference import central_differences, reference

CELLS = {"rnn": crnn.RNN, "lstm": crnn.LSTM, "gru": crnn.GRU}
SETTINGS = dict(dropout=0.3, recurrent_dropout=0.25, output_dropout=0.2)


def data(N=4, T=6, D=5, K=3, seed=0, ragged=True, many=True):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, T, D))
    lengths = np.array([T, T - 2, T, 3][:N]) if ragged else None
    y = rng.integers(0, K, size=(N, T) if many else (N,))
    return X, y, lengths


def make(cell, dtype="float64", seed=0, D=5, H=7, K=3, **options):
    return CELLS[cell](D, H, K, dtype=dtype, seed=seed, **options)


# ------------------------------------------------------------- settings

@pytest.mark.parametrize("name", ["dropout", "recurrent_dropout", "output_dropout"])
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan")])
def test_probability_outside_zero_one_is_refused(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a probability in \\[0, 1\\), got"):
        crnn.LSTM(3, 4, **{name: value})


@pytest.mark.parametrize("value", ["0.1", True, None])
def test_probability_of_the_wrong_type_is_refused(value):
    with pytest.raises(TypeError, match="recurrent_dropout must be a probability"):
        crnn.GRU(3, 4, recurrent_dropout=value)


def test_settings_that_cannot_act_are_refused():
    with pytest.raises(ValueError, match="output_dropout acts before the output layer"):
        crnn.RNN(3, 4, output=None, output_dropout=0.1)
    with pytest.raises(TypeError, match="dropout_first_layer must be True or False"):
        crnn.RNN(3, 4, dropout_first_layer=1)
    model = crnn.LSTM(3, 4, dropout=0.5)
    X, y = np.zeros((2, 3, 3)), np.zeros((2, 3), dtype=int)
    with pytest.raises(TypeError, match="training must be True or False"):
        model.loss_and_grad(X, y, training="yes")
    with pytest.raises(ValueError, match="dropout_seed must be >= 0"):
        model.loss_and_grad(X, y, training=True, dropout_seed=-1)
    with pytest.raises(TypeError, match="dropout_seed must be an int"):
        model.loss_and_grad(X, y, training=True, dropout_seed=1.5)


def test_settings_are_read_only_and_shown():
    model = crnn.LSTM(3, 4, num_layers=2, dropout=0.25, dropout_first_layer=False)
    assert (model.dropout, model.recurrent_dropout, model.output_dropout) == (0.25, 0, 0)
    assert "dropout=0.25" in repr(model) and "dropout_first_layer=False" in repr(model)
    assert "dropout" not in repr(crnn.LSTM(3, 4))
    with pytest.raises(AttributeError, match="read-only"):
        model.dropout = 0.1


# ------------------------------------------------- exact for the masks drawn

CASES = [
    # cell, options, data options
    ("rnn", dict(num_layers=2), {}),
    ("lstm", dict(num_layers=2), {}),
    ("gru", dict(num_layers=2), {}),
    ("lstm", dict(num_layers=2, bidirectional=True), {}),
    ("gru", dict(bidirectional=True, return_sequences=False), dict(many=False)),
    ("gru", dict(num_layers=2, reset_after=False), {}),
    ("gru", dict(bidirectional=True, reset_after=False, return_sequences=False),
     dict(many=False)),
    ("rnn", dict(num_layers=3, return_sequences=False), dict(many=False)),
    ("lstm", dict(num_layers=2, dropout_first_layer=False), dict(ragged=False)),
]


@pytest.mark.parametrize("cell,options,data_options", CASES)
@pytest.mark.parametrize("which", ["all", "dropout", "recurrent_dropout",
                                   "output_dropout"])
def test_agrees_with_the_reference_given_the_same_masks(cell, options,
                                                        data_options, which):
    settings = SETTINGS if which == "all" else {which: SETTINGS[which]}
    model = make(cell, **options, **settings)
    X, y, lengths = data(**data_options)
    loss, grads = model.loss_and_grad(X, y, lengths, training=True, dropout_seed=11)
    masks = _dropout.draw_masks(model, len(X), 11)
    ref = reference(model.params, X, y, lengths, cell=cell, masks=masks,
                    num_layers=model.num_layers, bidirectional=model.bidirectional,
                    return_sequences=model.return_sequences)
    assert loss == pytest.approx(ref.loss, rel=1e-12)
    for key in model.params:
        np.testing.assert_allclose(grads[key], ref.grads[key], rtol=1e-9,
                                   atol=1e-12, err_msg=key)
    # and the masks did something: without them the loss is another
    plain = reference(model.params, X, y, lengths, cell=cell,
                      num_layers=model.num_layers, bidirectional=model.bidirectional,
                      return_sequences=model.return_sequences)
    assert abs(plain.loss - loss) > 1e-6


@pytest.mark.parametrize("cell,options", [("lstm", {}),
                                          ("gru", dict(reset_after=False))])
@pytest.mark.parametrize("dtype,rtol", [("float32", 2e-4), ("float64", 1e-10)])
def test_larger_batches_on_every_path(dtype, rtol, cell, options):
    """T and B large enough for the packed step products (input and output
    dropout keep them; recurrent dropout runs its products on BLAS)."""
    X, y, lengths = data(N=9, T=12, D=6, seed=3, ragged=False)
    lengths = np.array([12, 12, 11, 9, 12, 7, 5, 12, 2])
    model = make(cell, dtype=dtype, D=6, H=40, num_layers=2, **options, **SETTINGS)
    loss, grads = model.loss_and_grad(X, y, lengths, training=True, dropout_seed=5)
    masks = _dropout.draw_masks(model, len(X), 5)
    ref = reference(model.params, X, y, lengths, cell=cell, masks=masks,
                    num_layers=2)
    assert loss == pytest.approx(ref.loss, rel=rtol)
    for key in model.params:
        scale = np.abs(ref.grads[key]).max()
        np.testing.assert_allclose(grads[key], ref.grads[key], rtol=0,
                                   atol=rtol * scale * 10, err_msg=key)


def test_token_inputs_drop_vocabulary_entries():
    rng = np.random.default_rng(2)
    X = rng.integers(0, 6, size=(3, 7))
    y = rng.integers(0, 6, size=(3, 7))
    model = crnn.GRU(6, 8, dtype="float64", seed=1, **SETTINGS)
    loss, grads = model.loss_and_grad(X, y, [7, 4, 6], training=True, dropout_seed=3)
    ref = reference(model.params, X, y, [7, 4, 6], cell="gru",
                    masks=_dropout.draw_masks(model, 3, 3))
    assert loss == pytest.approx(ref.loss, rel=1e-12)
    for key in model.params:
        np.testing.assert_allclose(grads[key], ref.grads[key], rtol=1e-9,
                                   atol=1e-12, err_msg=key)


@pytest.mark.parametrize("cell,options", [("rnn", {}), ("lstm", {}), ("gru", {}),
                                          ("gru", dict(reset_after=False))])
def test_gradient_agrees_with_finite_differences(cell, options):
    model = make(cell, H=5, num_layers=2, bidirectional=cell == "gru", **options,
                 **SETTINGS)
    X, y, lengths = data(N=3, T=5, seed=4)
    lengths = [5, 3, 4]

    def loss():
        return model.loss_and_grad(X, y, lengths, training=True, dropout_seed=8)[0]

    _, grads = model.loss_and_grad(X, y, lengths, training=True, dropout_seed=8)
    for key, array in model.params.items():
        numeric = central_differences(loss, array)
        np.testing.assert_allclose(grads[key], numeric, rtol=1e-6, atol=1e-9,
                                   err_msg=key)


# ---------------------------------------------------- when it acts, and p = 0

def test_same_seed_same_result_other_seed_other():
    model = make("lstm", num_layers=2, **SETTINGS)
    X, y, lengths = data()
    first = model.loss_and_grad(X, y, lengths, training=True, dropout_seed=1)
    again = model.loss_and_grad(X, y, lengths, training=True, dropout_seed=1)
    other = model.loss_and_grad(X, y, lengths, training=True, dropout_seed=2)
    assert first[0] == again[0] and first[0] != other[0]
    for key in model.params:
        np.testing.assert_array_equal(first[1][key], again[1][key])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_p_zero_is_bit_identical_to_no_dropout(dtype):
    X, y, lengths = data(N=6, T=9, seed=6)
    lengths = [9, 9, 4, 8, 9, 2][:6]
    X, y = X[:6], np.random.default_rng(0).integers(0, 3, size=(6, 9))
    plain = make("lstm", dtype=dtype, num_layers=2)
    zero = make("lstm", dtype=dtype, num_layers=2, dropout=0.0,
                recurrent_dropout=0, output_dropout=0.0)
    expected = plain.loss_and_grad(X, y, lengths)
    got = zero.loss_and_grad(X, y, lengths, training=True, dropout_seed=4)
    assert got[0] == expected[0]
    for key in plain.params:
        np.testing.assert_array_equal(got[1][key], expected[1][key])


def test_inference_never_drops():
    X, y, lengths = data(N=4, T=6, seed=7)
    plain = make("gru", num_layers=2)
    dropping = make("gru", num_layers=2, **SETTINGS)
    np.testing.assert_array_equal(dropping.forward(X, lengths), plain.forward(X, lengths))
    np.testing.assert_array_equal(dropping.predict(X, lengths), plain.predict(X, lengths))
    np.testing.assert_array_equal(dropping.predict_proba(X, lengths),
                                  plain.predict_proba(X, lengths))
    # training=False is today's loss_and_grad, bit for bit
    expected, got = plain.loss_and_grad(X, y, lengths), dropping.loss_and_grad(X, y, lengths)
    assert got[0] == expected[0]
    for key in plain.params:
        np.testing.assert_array_equal(got[1][key], expected[1][key])
    stream, plain_stream = dropping.stream(batch_size=4), plain.stream(batch_size=4)
    for t in range(3):
        np.testing.assert_array_equal(stream.step(X[:, t]), plain_stream.step(X[:, t]))
    scores = crnn.Trainer(dropping).evaluate(X, y, lengths)
    assert scores == crnn.Trainer(plain).evaluate(X, y, lengths)


def test_the_trainer_drops_and_stays_reproducible():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(16, 8, 5))
    y = rng.integers(0, 3, size=(16, 8))

    def fit(**settings):
        model = make("lstm", dtype="float32", num_layers=2, seed=3, **settings)
        crnn.Trainer(model, lr=1e-2, batch_size=4, seed=5).fit(X, y, epochs=2,
                                                               verbose=0)
        return model.params

    first, again = fit(**SETTINGS), fit(**SETTINGS)
    plain = fit()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert any(not np.array_equal(first[key], plain[key]) for key in first)
    # p = 0 trains exactly as a model without dropout
    zero = fit(dropout=0.0)
    for key in plain:
        np.testing.assert_array_equal(zero[key], plain[key])


# --------------------------------------------------------------- files

def test_save_load_and_pickle_keep_the_settings(tmp_path):
    model = make("lstm", num_layers=2, dropout_first_layer=False, **SETTINGS)
    path = tmp_path / "m.npz"
    model.save(path)
    for loaded in (crnn.load(path), pickle.loads(pickle.dumps(model))):
        for name in ("dropout", "recurrent_dropout", "output_dropout",
                     "dropout_first_layer"):
            assert getattr(loaded, name) == getattr(model, name), name
        X, y, lengths = data()
        a = model.loss_and_grad(X, y, lengths, training=True, dropout_seed=2)
        b = loaded.loss_and_grad(X, y, lengths, training=True, dropout_seed=2)
        assert a[0] == b[0]


def test_files_from_before_dropout_still_load(tmp_path):
    model = make("gru", num_layers=2)
    path = tmp_path / "old.npz"
    model.save(path)
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(arrays["crnn_header"].tobytes().decode("utf-8"))
    for name in ("dropout", "recurrent_dropout", "output_dropout",
                 "dropout_first_layer"):
        del header["config"][name]
    arrays["crnn_header"] = np.frombuffer(json.dumps(header).encode("utf-8"),
                                          dtype=np.uint8)
    buffer = _io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    loaded = crnn.load(path)
    assert (loaded.dropout, loaded.recurrent_dropout, loaded.output_dropout,
            loaded.dropout_first_layer) == (0.0, 0.0, 0.0, True)
    X = data()[0]
    np.testing.assert_array_equal(loaded.forward(X), model.forward(X))


def test_pickles_from_before_dropout_still_load():
    model = make("lstm", num_layers=2)
    state = model.__getstate__()
    for name in ("dropout", "recurrent_dropout", "output_dropout",
                 "dropout_first_layer"):
        del state[name]
    old = crnn.LSTM.__new__(crnn.LSTM)
    old.__setstate__(state)
    assert (old.dropout, old.recurrent_dropout, old.output_dropout,
            old.dropout_first_layer) == (0.0, 0.0, 0.0, True)
    X = data()[0]
    np.testing.assert_array_equal(old.forward(X), model.forward(X))


# -------------------------------------------------------------- PyTorch

def test_to_torch_carries_inter_layer_dropout_and_warns_about_the_rest():
    torch = pytest.importorskip("torch")
    model = make("lstm", num_layers=3, dropout_first_layer=False, dropout=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module, _ = model.to_torch()       # what PyTorch expresses: no warning
    assert isinstance(module, torch.nn.LSTM) and module.dropout == pytest.approx(0.3)
    model = make("gru", num_layers=2, **SETTINGS)
    with pytest.warns(UserWarning, match="recurrent_dropout.*output_dropout"):
        module, _ = model.to_torch()
    assert module.dropout == pytest.approx(0.3)
    back = crnn.from_torch(module)
    assert back.dropout == pytest.approx(0.3) and back.dropout_first_layer is False
    assert back.recurrent_dropout == 0 and back.output_dropout == 0


def test_from_torch_reads_dropout_into_the_layers_above_the_first():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.GRU(5, 6, num_layers=2, dropout=0.4, batch_first=True).double()
    model = crnn.from_torch(module)
    assert model.dropout == pytest.approx(0.4) and model.dropout_first_layer is False
    masks = _dropout.draw_masks(model, 3, 0)
    assert masks[0][0] is None and masks[0][1] is not None
    kept = masks[0][1][masks[0][1] != 0]
    np.testing.assert_allclose(kept, 1 / (1 - 0.4))
    X = np.random.default_rng(0).normal(size=(3, 4, 5))
    module.eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(X))[0].numpy()
    np.testing.assert_allclose(model.forward(X), expected, rtol=1e-12, atol=1e-12)


class OneRank:
    """A communicator of one rank (mpi4py's interface), to run the team's
    code path of Trainer.fit in this process."""
    rank, size = 0, 1

    def Allreduce(self, send, recv):
        recv[...] = send

    def Bcast(self, buffer, root=0):
        pass


def test_the_team_code_path_draws_the_same_masks_and_steps_the_schedule():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(12, 7, 5))
    y = rng.integers(0, 3, size=(12, 7))

    def fit(comm):
        model = make("gru", num_layers=2, seed=1, **SETTINGS)
        trainer = crnn.Trainer(model, "sgd", lr=0.2, batch_size=4, seed=2, comm=comm,
                               schedule=lambda opt: crnn.optim.ExponentialLR(opt, 0.5))
        history = trainer.fit(X, y, epochs=2, verbose=0)
        return model.params, history.history["lr"]

    alone, lr_alone = fit(None)
    team, lr_team = fit(OneRank())
    assert lr_alone == lr_team == [0.2, 0.1]
    for key in alone:
        np.testing.assert_allclose(team[key], alone[key], rtol=1e-10, atol=1e-12,
                                   err_msg=key)


def test_per_sequence_seeds_give_each_sequence_its_own_masks():
    """dropout_seed as one int per sequence: a sequence's masks depend on
    its seed alone, not on the batch around it (what lets MPI ranks draw,
    for their shares, the masks one process draws), and the gradient
    follows them."""
    model = crnn.LSTM(3, 5, 4, num_layers=2, dropout=0.3, recurrent_dropout=0.2,
                      output_dropout=0.1, dtype="float64", seed=0)
    seeds = (11, 22, 33, 44)
    whole = _dropout.draw_masks(model, 4, seeds)
    halves = [_dropout.draw_masks(model, 2, seeds[:2]), _dropout.draw_masks(model, 2, seeds[2:])]
    for group in range(3):
        for part, half in zip(whole[group] if group < 2 else [whole[2]],
                              zip(*[h[group] if group < 2 else [h[2]] for h in halves])):
            np.testing.assert_array_equal(part, np.concatenate(half))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(4, 6, 3)), rng.integers(0, 4, size=(4, 6))
    loss, grads = model.loss_and_grad(X, y, training=True, dropout_seed=seeds,
                                      reduction="sum")
    parts = [model.loss_and_grad(X[i:i + 2], y[i:i + 2], training=True,
                                 dropout_seed=seeds[i:i + 2], reduction="sum")
             for i in (0, 2)]
    assert abs(loss - sum(p[0] for p in parts)) <= 1e-12 * abs(loss)
    for name in grads:
        np.testing.assert_allclose(grads[name], parts[0][1][name] + parts[1][1][name],
                                   rtol=1e-12, atol=1e-14, err_msg=name)
    with pytest.raises(ValueError, match="one seed per sequence, 4, got 3"):
        model.loss_and_grad(X, y, training=True, dropout_seed=seeds[:3])
