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
    """`dropout_seed`: None or an int >= 0 (numpy's rule)."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"dropout_seed must be an int or None, got {seed!r}")
    if seed < 0:
        raise ValueError(f"dropout_seed must be >= 0, got {seed}")
    return int(seed)


def active(model):
    """Whether `model` drops anything in training."""
    return (model.dropout > 0 or model.recurrent_dropout > 0
            or model.output_dropout > 0)


def draw_masks(model, n, seed):
    """The masks of one training call on `n` sequences, in the user's
    batch order, drawn from ``numpy.random.default_rng(seed)``:
    ``(inputs, recurrent, output)`` with

    - inputs: one per layer, ``(n, D_l)`` (D_0 = input_size, then
      S * directions), or None where the layer's input is kept;
    - recurrent: one per lane (layer-major, then direction), ``(n, S)``,
      or None;
    - output: ``(n, S * directions)``, or None;

    S is h's width: ``proj_size`` for a projected LSTM, else hidden_size.

    Each entry is 0 or 1/(1-p) in the model's dtype.  Draws happen in
    this order, so a seed fixes every mask."""
    rng = np.random.default_rng(seed)
    dtype = model.dtype

    def mask(p, width):
        if p == 0:
            return None
        kept = rng.random((n, width)) >= p
        return kept.astype(dtype) * dtype.type(1.0 / (1.0 - p))

    state_width = model._state_width          # h's: S
    width = state_width * model.directions
    inputs = [mask(model.dropout if layer or model.dropout_first_layer else 0.0,
                   width if layer else model.input_size)
              for layer in range(model.num_layers)]
    recurrent = [mask(model.recurrent_dropout, state_width)
                 for _ in range(model.num_layers * model.directions)]
    output = mask(model.output_dropout, width)
    return inputs, recurrent, output


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
