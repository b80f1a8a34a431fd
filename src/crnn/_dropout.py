"""Dropout: the settings' checks and the masks of one training call.

A model's ``dropout`` acts on each layer's input x(t) (with
``dropout_first_layer=False``, on the inputs of layers 2 and up only:
PyTorch's inter-layer dropout), ``recurrent_dropout`` on h(t-1) inside the
recurrent product, ``output_dropout`` on the top layer's h(t) before the
output layer.  Masks are variational: one row per sequence, drawn once per
call and held for every time step; kept units are scaled by 1/(1-p).  Only
``loss_and_grad(..., training=True)`` draws them (the Trainer's steps).

The engine applies them (``_dropout.pxd``: the network on a layer's input
and the top h, the lane on h(t-1)); this module draws them, in the user's
batch order (`draw_masks`, which tests also use to give the float64
reference the same masks).

Neighbours: ``_inputs`` below; ``_model`` (loss_and_grad) and ``models``
(the constructors) above.
"""
import numbers

import numpy as np

__all__ = ["SETTINGS", "active", "check_probability", "check_seed", "draw_masks",
           "engine_masks", "dense_tokens", "sorted_masks", "training_masks"]

# The probabilities every model takes, and what each drops.
SETTINGS = ("dropout", "recurrent_dropout", "output_dropout")


def check_probability(value, name):
    """`value` as a float in [0, 1), or a TypeError / ValueError naming
    `name`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a probability in [0, 1), got {value!r}")
    value = float(value)
    if not 0.0 <= value < 1.0:      # NaN fails too
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
    return value


def check_seed(seed):
    """`dropout_seed`: None, an int >= 0 (numpy's rule), or a sequence of
    them, one per sequence of the call (a tuple of ints)."""
    if seed is None:
        return None
    if isinstance(seed, (list, tuple, np.ndarray)):
        return tuple(_one_seed(s, "dropout_seed's entries") for s in np.ravel(
            np.asarray(seed, dtype=object)))
    return _one_seed(seed, "dropout_seed")


def _one_seed(seed, name):
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"{name} must be >= 0, got {seed}")
    return int(seed)


def active(model):
    """Whether `model` drops anything in training."""
    return (model.dropout > 0 or model.recurrent_dropout > 0
            or model.output_dropout > 0)


def draw_masks(model, n, seed):
    """The masks of one training call on `n` sequences, in the user's
    batch order: ``(inputs, recurrent, output)`` with

    - inputs: one per layer, ``(n, D_l)`` (D_0 = input_size, then
      S * directions), or None where the layer's input is kept;
    - recurrent: one per lane (layer-major, then direction), ``(n, S)``,
      or None;
    - output: ``(n, S * directions)``, or None;

    S is h's width: ``proj_size`` for a projected LSTM, else hidden_size.
    Each entry is 0 or 1/(1-p) in the model's dtype.  `seed` (an int) draws
    every mask from ``numpy.random.default_rng(seed)``, in this order; a
    tuple of n ints draws each sequence's row from its own seed, so a
    sequence's masks do not depend on the batch it is in (the Trainer's
    way: any split of a batch over MPI ranks draws what one process
    draws)."""
    state_width = model._state_width          # h's: S
    width = state_width * model.directions
    blocks = ([(model.dropout if layer or model.dropout_first_layer else 0.0,
                width if layer else model.input_size)
               for layer in range(model.num_layers)]
              + [(model.recurrent_dropout, state_width)]
              * (model.num_layers * model.directions)
              + [(model.output_dropout, width)])
    total = sum(w for p, w in blocks if p > 0)
    if isinstance(seed, tuple):
        if len(seed) != n:
            raise ValueError(f"dropout_seed must hold one seed per sequence, "
                             f"{n}, got {len(seed)}")
        uniform = (np.stack([np.random.default_rng(s).random(total) for s in seed])
                   if n else np.empty((0, total)))
    else:
        uniform = np.random.default_rng(seed).random((n, total))
    dtype, masks, at = model.dtype, [], 0
    for p, w in blocks:
        if p == 0:
            masks.append(None)
            continue
        kept = uniform[:, at:at + w] >= p
        masks.append(kept.astype(dtype) * dtype.type(1.0 / (1.0 - p)))
        at += w
    layers = model.num_layers
    return masks[:layers], masks[layers:-1], masks[-1]


def training_masks(model, batch, training, seed):
    """The masks of a call with `training` and `dropout_seed` = `seed` (both
    checked: TypeError / ValueError), or None where nothing drops
    (inference, or every probability 0): `engine_masks`."""
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training must be True or False, got {training!r}")
    seed = check_seed(seed)
    if not (training and active(model)):
        return None
    return engine_masks(model, batch, seed)


def engine_masks(model, batch, seed):
    """The masks of one training call on `batch` (a validated Batch), in
    the engine's layout (`sorted_masks`); where the first layer's input is
    dropped and the inputs are tokens, ``batch.inputs`` becomes their
    one-hot vectors (`dense_tokens`)."""
    masks = sorted_masks(draw_masks(model, batch.size, seed), batch)
    if masks[0] is not None and masks[0][0] is not None and batch.inputs.ndim == 2:
        batch.inputs = dense_tokens(batch, model.input_size, model.dtype)
        batch.token_ids = True      # still token ids to the caller: no ∂L/∂X
    return masks


def sorted_masks(masks, batch):
    """draw_masks's masks in the engine's layout: rows in the batch's
    length-sorted order, C-contiguous; a list of Nones becomes None."""
    def rows(mask):
        return None if mask is None else np.ascontiguousarray(batch.in_order(mask))

    inputs, recurrent, output = masks
    inputs = [rows(m) for m in inputs]
    recurrent = [rows(m) for m in recurrent]
    return (inputs if any(m is not None for m in inputs) else None,
            recurrent if any(m is not None for m in recurrent) else None,
            rows(output))


def dense_tokens(batch, vocabulary, dtype):
    """Token ids (T, B) as the one-hot vectors they mean (T, B, V): the
    first layer's input dropout drops whole vocabulary entries of x(t), so
    the engine needs x itself there (padding rows stay zero)."""
    inputs = batch.inputs
    dense = np.zeros(inputs.shape + (vocabulary,), dtype=dtype)
    np.put_along_axis(dense, inputs[..., None].astype(np.intp), 1, axis=-1)
    dense[~batch.mask] = 0
    return dense
