"""crnn.dask: batch inference on Dask collections.

    import crnn.dask
    probabilities = crnn.dask.forward(model, X, lengths)      # lazy dask array
    labels = crnn.dask.predict(model, X, lengths).compute()   # on the cluster
    outputs = crnn.dask.map_sequences(model, bag, "predict")  # a dask.bag

``X`` is a ``dask.array`` of sequences, ``(N, T, D)`` features or ``(N, T)``
token ids, chunked along the sequences (axis 0); chunks along time or
features are merged first (one sequence must be whole in one task).
``lengths`` (optional) is a numpy or dask array of the N real lengths; it is
cut into the same chunks as X.  Every chunk becomes one call of the model's
own method on a worker, so results are the in-process ones for the same
rows.  The model travels once per graph, pickled (its parameters and its
constructor arguments, nothing else: about the size of its parameters).

A ``dask.bag`` of variable-length sequences (each ``(T_i, D)`` or
``(T_i,)``) goes through ``map_sequences``: each partition is one padded
batch, and each result is cut back to its sequence's length.

Needs dask (``pip install "crnn[dask]"``); nothing here starts a cluster:
use your own ``dask.distributed.Client`` (or dask's default scheduler).
docs/distributed.md has the recipes.
"""
import numpy as np

__all__ = ["forward", "map_sequences", "predict", "predict_proba"]

INSTALL_HINT = 'pip install "crnn[dask]"'
_METHODS = ("forward", "predict", "predict_proba")


def _dask_array():
    try:
        import dask.array
    except ImportError as error:
        raise ImportError(f"crnn.dask needs dask: {INSTALL_HINT} ({error})") from None
    return dask.array


def _check(model, method):
    if not (hasattr(model, "forward") and hasattr(model, "params")):
        raise TypeError(f"model must be a crnn model (crnn.RNN, LSTM or GRU), "
                        f"got {type(model).__name__}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {', '.join(_METHODS)}, got {method!r}")
    if method == "predict" and model.output is None:
        raise ValueError("predict needs an output layer; this model has output=None")
    if method == "predict_proba" and model.output != "softmax":
        raise ValueError(f"predict_proba is for softmax models; this model has "
                         f"output={model.output!r}")


def _probe(model, method, tokens):
    """The trailing shape and dtype of `method`'s result, from one step of
    one zero sequence (cheap, and always what the workers will return)."""
    X = np.zeros((1, 1), dtype=np.int64) if tokens else \
        np.zeros((1, 1, model.input_size), dtype=model.dtype)
    result = np.asarray(getattr(model, method)(X))
    return result.shape[1 if not model.return_sequences else 2:], result.dtype


def _run_block_full(X, model, method):
    return getattr(model, method)(X)


def _blocks(model, X, lengths, method):
    da = _dask_array()
    _check(model, method)
    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask.array (N, T, D) or (N, T), chunked along "
                        f"the sequences, got {type(X).__name__}; for numpy arrays "
                        f"call model.{method} directly")
    if X.ndim not in (2, 3):
        raise ValueError(f"X must be (N, T, D) float features or (N, T) integer "
                         f"tokens, got {X.ndim} dimension(s) (shape {X.shape})")
    if X.ndim == 3 and X.shape[2] != model.input_size:
        raise ValueError(f"X has {X.shape[2]} features, the model expects "
                         f"{model.input_size}")
    if X.ndim == 2 and X.dtype.kind not in "iu":
        raise TypeError(f"a 2-D X holds token ids and must be integers, got "
                        f"dtype {X.dtype}; for float features pass (N, T, D)")
    if any(n > 1 for n in X.numblocks[1:]):
        X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})
    trailing, dtype = _probe(model, method, X.ndim == 2)
    steps = X.shape[1]
    if model.return_sequences:
        chunks = (X.chunks[0], (steps,)) + tuple((n,) for n in trailing)
    else:
        chunks = (X.chunks[0],) + tuple((n,) for n in trailing)
    kwargs = dict(dtype=dtype, chunks=chunks, meta=np.empty((0,) * len(chunks), dtype),
                  model=model, method=method)
    if len(chunks) < X.ndim:
        kwargs["drop_axis"] = list(range(len(chunks), X.ndim))
    elif len(chunks) > X.ndim:
        kwargs["new_axis"] = list(range(X.ndim, len(chunks)))
    if lengths is None:
        return da.map_blocks(_run_block_full, X, **kwargs)
    if isinstance(lengths, da.Array):
        if lengths.ndim != 1 or lengths.shape[0] != X.shape[0]:
            raise ValueError(f"lengths must be (N,) = ({X.shape[0]},), got shape "
                             f"{lengths.shape}")
        lengths = lengths.rechunk((X.chunks[0],))
    else:
        lengths = np.asarray(lengths)
        if lengths.shape != (X.shape[0],):
            raise ValueError(f"lengths must be (N,) = ({X.shape[0]},), got shape "
                             f"{lengths.shape}")
        if lengths.dtype.kind not in "iu":
            raise TypeError(f"lengths must be integers, got dtype {lengths.dtype}")
        if len(lengths) and (lengths.min() < 1 or lengths.max() > steps):
            raise ValueError(f"lengths must be between 1 and T = {steps}, got values "
                             f"from {lengths.min()} to {lengths.max()}")
        lengths = da.from_array(lengths, chunks=(X.chunks[0],))
    # map_blocks lines arrays up from their last axis: give lengths X's
    # number of axes (N, 1[, 1]) so that its blocks meet X's along axis 0
    lengths = lengths.reshape((X.shape[0],) + (1,) * (X.ndim - 1))
    return da.map_blocks(_run_block_lengths, X, lengths, **kwargs)


def _run_block_lengths(X, lengths, model, method):
    return getattr(model, method)(X, np.asarray(lengths).reshape(-1))


def forward(model, X, lengths=None):
    """``model.forward`` over a dask array chunked along sequences (lazy)."""
    return _blocks(model, X, lengths, "forward")


def predict(model, X, lengths=None):
    """``model.predict`` over a dask array chunked along sequences (lazy)."""
    return _blocks(model, X, lengths, "predict")


def predict_proba(model, X, lengths=None):
    """``model.predict_proba`` over a dask array chunked along sequences (lazy)."""
    return _blocks(model, X, lengths, "predict_proba")


def _run_partition(sequences, model, method):
    sequences = list(sequences)
    if not sequences:
        return []
    outputs = getattr(model, method)(sequences)
    if not model.return_sequences:
        return list(outputs)
    return [outputs[i, :len(sequence)] for i, sequence in enumerate(sequences)]


def map_sequences(model, bag, method="predict"):
    """A dask.bag of the model's results for a dask.bag of variable-length
    sequences: each partition is one padded batch on a worker, each result
    cut to its own sequence's length (``(T_i, K)``, ``(T_i,)``, or ``(K,)``
    / a scalar for many-to-one models)."""
    try:
        import dask.bag as db
    except ImportError as error:
        raise ImportError(f"crnn.dask needs dask: {INSTALL_HINT} ({error})") from None
    _check(model, method)
    if not isinstance(bag, db.Bag):
        raise TypeError(f"bag must be a dask.bag of sequences, got {type(bag).__name__}")
    return bag.map_partitions(_run_partition, model=model, method=method)
