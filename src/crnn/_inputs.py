"""Input validation and layout for the models: the boundary of crnn.

Everything a user passes is checked here, before any kernel runs, and turned
into the driver's layout: time-major, C-contiguous, in the model's dtype,
with the batch sorted by length (longest first) and padding zeroed.  Every
error is a ValueError or TypeError naming what was expected and what was
given.
"""
import contextlib
import numbers

import numpy as np

# BLAS takes 32-bit integers: every matrix the driver hands it must have
# fewer elements per dimension product than this.
INT32_MAX = 2**31 - 1


def _describe(array):
    return f"an array of shape {array.shape} and dtype {array.dtype}"


def as_real_array(value, name):
    """`value` as a numpy array of real numbers (integers or floats)."""
    if isinstance(value, np.ma.MaskedArray):
        # np.asarray would silently drop the mask and read the masked values
        raise TypeError(
            f"{name} is a numpy masked array; crnn does not read masks: pass "
            f"lengths (or a list of sequences) for sequences of different "
            f"lengths, or {name}.filled(0)")
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{name} must be a rectangular array; {error}") from None
    if array.dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must hold real numbers (integer or float), "
            f"got {_describe(array)}")
    return array


def check_buffers(steps, n, width):
    """The driver's largest buffers are ((T+1)·N × width); BLAS takes 32-bit
    sizes.  Checked from the shapes alone, before anything is copied."""
    if (steps + 1) * n * width > INT32_MAX:
        raise ValueError(
            f"a batch of {n} sequences of {steps} steps needs buffers of "
            f"{(steps + 1) * n * width} elements, more than the 32-bit sizes "
            f"BLAS takes ({INT32_MAX}); split the batch")


_NO_CONTEXT = contextlib.nullcontext()     # reusable: it holds no state


def _narrowing(source, dtype):
    """Silence numpy's overflow warning for a float cast that narrows
    (float64 -> float32): a value beyond float32's range becomes inf, which
    the caller then refuses with a ValueError.  Other casts cannot overflow
    and pay nothing."""
    if source.dtype.kind == "f" and source.dtype.itemsize > np.dtype(dtype).itemsize:
        return np.errstate(over="ignore")
    return _NO_CONTEXT


def _all_finite(array):
    """No NaN or infinity in `array`.  Counting the finite elements costs a
    small call about a quarter less than np.isfinite(array).all(), a ufunc
    reduction."""
    return np.count_nonzero(np.isfinite(array)) == array.size


def _non_finite(name, dtype):
    beyond = (" (values beyond ±3.4e38 are infinite in float32)"
              if np.dtype(dtype) == np.float32 else "")
    return ValueError(f"{name} contains NaN or infinity{beyond}; expected finite values")


def _aligned(array):
    """`array` itself when its data is aligned for its dtype, else an aligned
    copy: the kernels read it through typed C pointers."""
    return array if array.flags.aligned else array.copy()


# The float types a model computes in.
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype):
    """`dtype` as a numpy dtype, float32 or float64 (a model's dtype)."""
    if dtype is None:
        raise TypeError("dtype must be 'float32' or 'float64', got None")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype}")
    return dtype


def check_positive_int(value, name, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class Batch:
    """A validated batch in the driver's layout.

    inputs   (T, B, D) floats of the model's dtype, or (T, B) int32 tokens
    lengths  (B,) int32, sorted descending
    order    (B,) positions in the user's batch of the sorted rows
    """

    def __init__(self, inputs, lengths, order, steps, full=False):
        self.inputs = inputs
        self.lengths = lengths
        self.order = order
        self.steps = steps
        self.size = len(order)
        # full: every sequence has all T steps, so the order is the identity
        # and nothing is padded (the common case: no reordering copies)
        self.full = full
        self._mask = None
        # inputs given as token ids, even where dropout made them one-hot
        self.token_ids = inputs is not None and inputs.ndim == 2

    @property
    def mask(self):
        """mask[t, b]: position t of sorted row b is real (T, B)."""
        if self._mask is None:
            self._mask = np.arange(self.steps)[:, None] < self.lengths[None, :]
        return self._mask

    def in_order(self, array):
        """The user's rows (first axis) in the sorted order."""
        return array if self.full else array[self.order]

    def unsort(self, time_major):
        """(T, B, ...) in sorted order -> (N, T, ...) in the user's order."""
        if self.full:
            # a copy always: time_major is the driver's workspace
            return time_major.swapaxes(0, 1).copy()
        result = np.empty((self.size, self.steps) + time_major.shape[2:],
                          dtype=time_major.dtype)
        result[self.order] = np.swapaxes(time_major, 0, 1)
        return result

    def unsort_rows(self, rows):
        """(B, ...) or (lanes, B, ...) sorted -> the user's order (axis -2/0)."""
        if self.full:
            return rows.copy()
        result = np.empty_like(rows)
        if rows.ndim == 3:
            result[:, self.order] = rows
        else:
            result[self.order] = rows
        return result

    def sort_state(self, state):
        """(lanes, N, H) in the user's order -> sorted, C-contiguous."""
        return np.ascontiguousarray(state if self.full else state[:, self.order])


def _pad_list(sequences, name):
    arrays = [as_real_array(s, f"{name}[{i}]") for i, s in enumerate(sequences)]
    if not arrays:
        raise ValueError(f"{name} must hold at least one sequence, got an empty list")
    ndims = {a.ndim for a in arrays}
    if len(ndims) != 1 or ndims.pop() not in (1, 2):
        raise ValueError(
            f"{name} must be a list of arrays of shape (T_i, D) or (T_i,) "
            f"with the same number of dimensions, got dimensions "
            f"{[a.ndim for a in arrays]}")
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    if lengths.min() == 0:
        raise ValueError(
            f"every sequence in {name} needs at least one step, "
            f"{name}[{int(np.argmin(lengths))}] has 0")
    widths = {a.shape[1:] for a in arrays}
    if len(widths) != 1:
        raise ValueError(
            f"every sequence in {name} must have the same trailing shape, "
            f"got {sorted(widths)}")
    dtype = np.result_type(*arrays)
    padded = np.zeros((len(arrays), int(lengths.max())) + arrays[0].shape[1:],
                      dtype=dtype)
    for i, array in enumerate(arrays):
        padded[i, :len(array)] = array
    return padded, lengths


def _check_lengths(lengths, n, steps):
    if isinstance(lengths, np.ma.MaskedArray):
        raise TypeError("lengths is a numpy masked array; pass plain integers")
    try:
        lengths = np.asarray(lengths)
    except ValueError:  # ragged nested lists
        raise ValueError(
            f"lengths must be {n} integers, one per sequence, got a ragged "
            f"nested sequence") from None
    if lengths.shape != (n,):
        raise ValueError(
            f"lengths must have shape ({n},), one per sequence, got shape "
            f"{lengths.shape}")
    if lengths.dtype.kind not in "iu":
        raise TypeError(
            f"lengths must be integers, got {_describe(lengths)}")
    if lengths.min() < 1 or lengths.max() > steps:
        bad = lengths[(lengths < 1) | (lengths > steps)][0]
        raise ValueError(
            f"every length must be in [1, {steps}] (T = {steps}), got {bad}")
    return lengths.astype(np.int64)


# (N, T) -> (order, lengths) of a batch of N sequences of T steps each, for
# calls without lengths: both are constants of the shape, and making them
# (np.arange, np.full) cost a small call about 1% of its instructions.
# Read-only, as they are shared; a bounded cache of the shapes seen last.
_FULL_LAYOUTS = {}
_MAX_FULL_LAYOUTS = 64


def _full_layout(n, steps):
    layout = _FULL_LAYOUTS.get((n, steps))
    if layout is None:
        order = np.arange(n)
        lengths = np.full(n, steps, dtype=np.int32)
        order.flags.writeable = lengths.flags.writeable = False
        if len(_FULL_LAYOUTS) >= _MAX_FULL_LAYOUTS:
            _FULL_LAYOUTS.clear()
        layout = _FULL_LAYOUTS[(n, steps)] = (order, lengths)
    return layout


def prepare_batch(X, lengths, input_size, dtype, buffer_width=None):
    """Validate X (and lengths) and lay them out for the driver.

    buffer_width: the widest row of the driver's buffers for this model
    (see check_buffers), or None when X is not one driver call (a data set).
    """
    if isinstance(X, (list, tuple)):
        if lengths is not None:
            raise ValueError(
                "lengths must be None when X is a list of sequences "
                "(the lengths are taken from the sequences)")
        X, lengths = _pad_list(X, "X")
    else:
        X = as_real_array(X, "X")
    if X.ndim == 3:
        tokens = False
        if X.shape[2] != input_size:
            raise ValueError(
                f"X has {X.shape[2]} features, the model expects {input_size}")
    elif X.ndim == 2:
        tokens = True
        if X.dtype.kind not in "iu":
            raise TypeError(
                f"a 2-D X holds token ids and must be integers, got "
                f"{_describe(X)}; for float features pass (N, T, D)")
    else:
        raise ValueError(
            f"X must be (N, T, D) float features or (N, T) integer tokens, "
            f"got {X.ndim} dimension(s) (shape {X.shape})")
    n, steps = X.shape[:2]
    if n == 0:
        raise ValueError(f"X must hold at least one sequence, got shape {X.shape}")
    if steps == 0:
        raise ValueError(f"X must have at least one time step, got shape {X.shape}")
    # Sizes first, from the shapes alone: nothing is allocated for a batch
    # that is too big (a broadcast X can be huge and cost no memory).
    width = 1 if tokens else input_size
    if n * steps * max(width, 1) > INT32_MAX:
        raise ValueError(
            f"X has {n * steps * width} elements; crnn's BLAS calls take "
            f"32-bit sizes, at most {INT32_MAX}")
    if buffer_width is not None:
        check_buffers(steps, n, buffer_width)
    if lengths is None:
        # every sequence full length: the stable order is the identity
        order, sorted_lengths = _full_layout(n, steps)
        padded = False
    else:
        lengths = _check_lengths(lengths, n, steps)
        order = np.argsort(-lengths, kind="stable")
        sorted_lengths = np.ascontiguousarray(lengths[order], dtype=np.int32)
        padded = bool(sorted_lengths[-1] < steps)
    # Equal lengths (the common case): the stable order is the identity and
    # there is no padding, so the layout change is the only copy (none for a
    # single sequence: the driver only reads its inputs).
    batch = Batch(None, sorted_lengths, order, steps, full=not padded)
    in_order = batch.in_order(X)
    batch.token_ids = bool(tokens)
    if tokens:
        inputs = np.ascontiguousarray(in_order.T)           # (T, B)
        real = inputs[batch.mask] if padded else inputs
        if real.size and (real.min() < 0 or real.max() >= input_size):
            bad = real[(real < 0) | (real >= input_size)][0]
            raise ValueError(
                f"token ids must be in [0, {input_size}) (input_size = "
                f"{input_size}), got {bad}")
        inputs = _aligned(inputs.astype(np.int32, copy=False))
        if padded:
            inputs[~batch.mask] = 0
    else:
        if in_order.dtype == dtype:     # no cast, nothing can overflow
            inputs = np.ascontiguousarray(in_order.swapaxes(0, 1))
        else:
            with _narrowing(in_order, dtype):
                inputs = np.ascontiguousarray(in_order.swapaxes(0, 1), dtype=dtype)
        inputs = _aligned(inputs)
        if padded:
            inputs[~batch.mask] = 0
        if not _all_finite(inputs):
            raise _non_finite("X", dtype)
    batch.inputs = inputs
    return batch


# Signed ids of 32 or 64 bits viewed as unsigned: a negative id becomes at
# least 2**31, beyond every output_size (V's rows are a BLAS dimension, so
# fewer than 2**31), and one maximum checks both ends of [0, output_size):
# half the cost of min and max on a small call.  Keyed by the native dtypes
# only (a view of a byte-swapped array would read other numbers).
_UNSIGNED = {np.dtype(np.int32): np.dtype(np.uint32),
             np.dtype(np.int64): np.dtype(np.uint64)}


def _outside(ids, size):
    """Whether any of the (non-empty) real-valued `ids` is outside [0, size)."""
    unsigned = _UNSIGNED.get(ids.dtype)
    if unsigned is not None:
        return np.maximum.reduce(ids.view(unsigned), axis=None) >= size
    return ids.min() < 0 or ids.max() >= size


def prepare_targets(y, batch, output, output_size, return_sequences, dtype):
    """Validate targets and lay them out like the batch: int32 class ids
    (T, B) / (B,) for softmax, floats (T, B, K) / (B, K) for linear."""
    if isinstance(y, (list, tuple)) and return_sequences and len(y) and \
            not np.isscalar(y[0]):
        y, target_lengths = _pad_list(y, "y")
        if y.shape[0] != batch.size or \
                not np.array_equal(target_lengths[batch.order], batch.lengths):
            raise ValueError(
                "y must hold one target sequence per input sequence, with the "
                f"same lengths; got {len(target_lengths)} sequences of lengths "
                f"{target_lengths.tolist()}")
        if y.shape[1] < batch.steps:
            y = np.concatenate(
                [y, np.zeros((y.shape[0], batch.steps - y.shape[1]) + y.shape[2:],
                             dtype=y.dtype)], axis=1)
    y = as_real_array(y, "y")
    n, steps = batch.size, batch.steps
    if output == "softmax":
        expected = (n, steps) if return_sequences else (n,)
        if y.shape != expected:
            raise ValueError(
                f"y must be class ids of shape {expected}, got shape {y.shape}")
        if not return_sequences or batch.full:
            real = y
        else:
            real = y[batch.order].T[batch.mask]
        if y.dtype.kind == "f":
            if not np.isfinite(real).all() or (real != np.round(real)).any():
                raise ValueError(
                    "y must be whole class ids, got a fractional or non-finite value")
        if real.size and _outside(real, output_size):
            bad = real[(real < 0) | (real >= output_size)][0]
            raise ValueError(
                f"class ids in y must be in [0, {output_size}) (output_size = "
                f"{output_size}), got {bad}")
        labels = batch.in_order(y)
        if return_sequences:
            labels = np.ascontiguousarray(labels.T, dtype=np.int32)
            if not batch.full:
                labels[~batch.mask] = 0
            return labels
        return np.ascontiguousarray(labels, dtype=np.int32)

    # linear: (N, T, K) / (N, K); a trailing K = 1 may be left out
    expected = (n, steps, output_size) if return_sequences else (n, output_size)
    if output_size == 1 and y.shape == expected[:-1]:
        y = y[..., None]
    if y.shape != expected:
        raise ValueError(f"y must have shape {expected}, got shape {y.shape}")
    with _narrowing(y, dtype):
        if return_sequences:
            targets = np.ascontiguousarray(np.swapaxes(batch.in_order(y), 0, 1),
                                           dtype=dtype)
            if not batch.full:
                targets[~batch.mask] = 0
        else:
            targets = np.ascontiguousarray(batch.in_order(y), dtype=dtype)
    if not _all_finite(targets):
        raise _non_finite("y", dtype)
    return targets


def prepare_state(state, name, shape, batch, dtype):
    """Validate one initial state array (lanes, N, H) and sort its rows."""
    state = as_real_array(state, name)
    if state.shape != shape:
        raise ValueError(
            f"{name} must have shape {shape} (num_layers * directions, N, "
            f"hidden_size), got shape {state.shape}")
    with _narrowing(state, dtype):
        state = batch.sort_state(state.astype(dtype, copy=False))
    if not _all_finite(state):
        raise _non_finite(name, dtype)
    return state
