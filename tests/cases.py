"""Shared test data: model configurations, random params and batches.

Sizes are small on purpose (N=3, T=5, D=4, H=6, K=3) so the suite stays fast.
Parameters are drawn here, from the tests' own generator, and copied into the
model with set_params, so results never depend on crnn's initialiser.

Every case has a ``cell``: "rnn" (crnn.RNN, the default, with a nonlinearity),
"lstm" (crnn.LSTM: the initial state is the pair (h0, c0)) or "gru" (crnn.GRU).
"""

import itertools

import numpy as np

from reference import CELLS, param_shapes

N, T, D, H, K = 3, 5, 4, 6, 3
RAGGED = np.array([3, 5, 1], dtype=np.int64)   # unsorted, includes 1 and T


class Case:
    """One point of the option matrix."""

    def __init__(self, nonlinearity="tanh", output="softmax", return_sequences=True,
                 num_layers=1, bidirectional=False, tokens=False, ragged=False,
                 use_h0=False, K=K, cell="rnn"):
        if cell not in CELLS:
            raise ValueError(cell)
        self.cell = cell
        # the nonlinearity is the vanilla RNN's option; gated cells have none
        self.nonlinearity = nonlinearity if cell == "rnn" else None
        self.output = output
        self.return_sequences = return_sequences
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.tokens = tokens
        self.ragged = ragged
        self.use_h0 = use_h0
        self.K = K

    @property
    def dirs(self):
        return 2 if self.bidirectional else 1

    @property
    def output_size(self):
        return None if self.output is None else self.K

    def model_kwargs(self):
        kw = dict(num_layers=self.num_layers, bidirectional=self.bidirectional,
                  output=self.output, return_sequences=self.return_sequences)
        if self.cell == "rnn":
            kw["nonlinearity"] = self.nonlinearity
        return kw

    def ref_kwargs(self):
        """Keyword arguments of reference.reference and torch_helper.torch_run."""
        kw = self.model_kwargs()
        if self.cell != "rnn":
            kw["cell"] = self.cell
        return kw

    def replace(self, **changes):
        """A copy with some options changed."""
        kw = dict(nonlinearity=self.nonlinearity, output=self.output,
                  return_sequences=self.return_sequences, num_layers=self.num_layers,
                  bidirectional=self.bidirectional, tokens=self.tokens,
                  ragged=self.ragged, use_h0=self.use_h0, K=self.K, cell=self.cell)
        kw.update(changes)
        return Case(**kw)

    def __repr__(self):
        parts = [self.nonlinearity if self.cell == "rnn" else self.cell, str(self.output),
                 "m2m" if self.return_sequences else "m2o",
                 f"L{self.num_layers}", "bi" if self.bidirectional else "uni",
                 "tok" if self.tokens else "float",
                 "ragged" if self.ragged else "equal",
                 "h0" if self.use_h0 else "noh0"]
        if self.K != K:
            parts.append(f"K{self.K}")
        return "-".join(parts)


def case_matrix(**fixed):
    """Every combination of the options not fixed by the caller."""
    axes = dict(
        nonlinearity=["tanh", "relu"],
        output=["softmax", "linear"],
        return_sequences=[True, False],
        num_layers=[1, 2],
        bidirectional=[False, True],
        tokens=[False, True],
        ragged=[False, True],
        use_h0=[False, True],
    )
    cell = fixed.pop("cell", "rnn")
    if cell != "rnn":
        axes["nonlinearity"] = [None]          # gated cells have no nonlinearity option
    axes.update({k: [v] for k, v in fixed.items()})
    keys = list(axes)
    return [Case(cell=cell, **dict(zip(keys, vals)))
            for vals in itertools.product(*axes.values())]


def random_params(case, seed=0, scale=0.6):
    rng = np.random.default_rng(seed)
    shapes = param_shapes(D, H, case.output_size, case.num_layers, case.bidirectional,
                          case.output, cell=case.cell)
    return {k: rng.uniform(-scale, scale, size=s) for k, s in shapes.items()}


def make_batch(case, seed=1, n=N, t=T):
    """X, y, lengths, h0 for ``case``; padded positions hold random (valid) junk.

    For an LSTM case with use_h0, h0 is the pair (h0, c0)."""
    rng = np.random.default_rng(seed)
    lengths = RAGGED.copy()[:n] if case.ragged else None
    if case.tokens:
        X = rng.integers(0, D, size=(n, t))
    else:
        X = rng.normal(size=(n, t, D))
    if case.output == "softmax":
        y = rng.integers(0, case.K, size=(n, t) if case.return_sequences else (n,))
    elif case.output == "linear":
        y = rng.normal(size=(n, t, case.K) if case.return_sequences else (n, case.K))
    else:
        y = None
    h0 = rng.normal(scale=0.5, size=(case.num_layers * case.dirs, n, H)) if case.use_h0 else None
    if h0 is not None and case.cell == "lstm":
        h0 = (h0, rng.normal(scale=0.5, size=h0.shape))
    return X, y, lengths, h0


def zero_state(case, n=N):
    """An explicit all-zeros initial state for ``case`` (a pair for an LSTM)."""
    h0 = np.zeros((case.num_layers * case.dirs, n, H))
    return (h0, h0.copy()) if case.cell == "lstm" else h0


MODEL_CLASSES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def make_model(crnn, case, params=None, dtype="float64", seed=0):
    cls = getattr(crnn, MODEL_CLASSES[case.cell])
    model = cls(D, H, case.output_size, dtype=dtype, seed=seed, **case.model_kwargs())
    if params is not None:
        model.set_params({k: np.asarray(v, dtype=dtype) for k, v in params.items()})
    return model


def close(a, b, what="", tol=1e-10):
    """assert_allclose with shape check; an LSTM state pair (h, c) part by part."""
    if isinstance(b, tuple):
        assert isinstance(a, tuple) and len(a) == len(b) == 2, what
        for name, u, v in zip(("h", "c"), a, b):
            close(u, v, f"{what} {name}", tol)
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: {a.shape} != {b.shape}"
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=what)
