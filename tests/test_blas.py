"""The row-major BLAS shim (crnn._blas) against numpy.

crnn._blas exposes Python wrappers for the tests (named gemm/gemv/axpy or
_gemm/_gemv/_axpy): every transpose combination, float32 and float64, 1-row /
1-column / non-square shapes, several alpha/beta values, output in place.
"""

import itertools

import numpy as np
import pytest

blas = pytest.importorskip("crnn._blas")


def _wrapper(name):
    # gemm's test hook is the parallel module's (it calls the shim's gemm
    # unless the team splits the product)
    module = pytest.importorskip("crnn._parallel") if name == "gemm" else blas
    fn = getattr(module, name, None) or getattr(module, "_" + name, None)
    if fn is None:
        pytest.fail(f"{module.__name__} exposes neither {name} nor _{name}")
    return fn


TOL = {np.float32: 2e-5, np.float64: 1e-12}
DTYPES = [np.float32, np.float64]
GEMM_SHAPES = [(1, 1, 1), (1, 7, 3), (5, 1, 4), (3, 4, 5), (8, 6, 1), (2, 9, 2),
               (17, 13, 9), (33, 65, 31)]
ALPHA_BETA = [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25), (0.0, 1.5), (1.0, 1.0)]


def _close(actual, expected, dtype, scale=1.0):
    tol = TOL[dtype]
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(scale, 1.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
@pytest.mark.parametrize("m,n,k", GEMM_SHAPES)
@pytest.mark.parametrize("alpha,beta", ALPHA_BETA)
def test_gemm(dtype, trans_a, trans_b, m, n, k, alpha, beta):
    gemm = _wrapper("gemm")
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    A = rng.normal(size=(k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.normal(size=(n, k) if trans_b else (k, n)).astype(dtype)
    C = rng.normal(size=(m, n)).astype(dtype)
    A0, B0, C0 = A.copy(), B.copy(), C.copy()
    opA = A.T if trans_a else A
    opB = B.T if trans_b else B
    expected = alpha * (opA.astype(np.float64) @ opB.astype(np.float64)) + beta * C0
    ret = gemm(trans_a, trans_b, alpha, A, B, beta, C)
    assert ret is None or ret is C or np.shares_memory(np.asarray(ret), C)
    _close(C, expected, dtype, scale=np.sqrt(k))
    assert C.dtype == dtype
    np.testing.assert_array_equal(A, A0)       # inputs untouched
    np.testing.assert_array_equal(B, B0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a,trans_b", list(itertools.product([False, True], repeat=2)))
def test_gemm_beta_zero_ignores_c(dtype, trans_a, trans_b):
    """BLAS semantics: with beta = 0, C is output only (garbage, even NaN, is overwritten)."""
    gemm = _wrapper("gemm")
    m, n, k = 4, 3, 5
    rng = np.random.default_rng(0)
    A = rng.normal(size=(k, m) if trans_a else (m, k)).astype(dtype)
    B = rng.normal(size=(n, k) if trans_b else (k, n)).astype(dtype)
    C = np.full((m, n), np.nan, dtype=dtype)
    gemm(trans_a, trans_b, 2.0, A, B, 0.0, C)
    opA = A.T if trans_a else A
    opB = B.T if trans_b else B
    _close(C, 2.0 * (opA.astype(np.float64) @ opB), dtype, scale=3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_k_zero_scales_c(dtype):
    gemm = _wrapper("gemm")
    C = np.arange(6, dtype=dtype).reshape(2, 3)
    gemm(False, False, 1.0, np.zeros((2, 0), dtype), np.zeros((0, 3), dtype), 0.5, C)
    _close(C, 0.5 * np.arange(6).reshape(2, 3), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_on_row_slices(dtype):
    """Callers hand the shim prefixes of C-contiguous buffers (the live rows)."""
    gemm = _wrapper("gemm")
    rng = np.random.default_rng(1)
    buf = rng.normal(size=(10, 6)).astype(dtype)
    W = rng.normal(size=(6, 6)).astype(dtype)
    out = np.zeros((10, 6), dtype)
    gemm(False, True, 1.0, buf[:4], W, 0.0, out[:4])
    _close(out[:4], buf[:4].astype(np.float64) @ W.T, dtype, scale=3)
    assert np.all(out[4:] == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_shape_mismatch_raises(dtype):
    gemm = _wrapper("gemm")
    A = np.zeros((3, 4), dtype)
    B = np.zeros((5, 2), dtype)
    C = np.zeros((3, 2), dtype)
    with pytest.raises(ValueError):
        gemm(False, False, 1.0, A, B, 0.0, C)
    with pytest.raises(ValueError):
        gemm(False, False, 1.0, A, np.zeros((4, 2), dtype), 0.0, np.zeros((2, 2), dtype))


def test_gemm_mixed_dtypes_raise():
    gemm = _wrapper("gemm")
    with pytest.raises((TypeError, ValueError)):
        gemm(False, False, 1.0, np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float64),
             0.0, np.zeros((2, 2), np.float64))


GEMV_SHAPES = [(1, 1), (1, 5), (5, 1), (4, 7), (16, 3), (31, 64)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("m,n", GEMV_SHAPES)
@pytest.mark.parametrize("alpha,beta", ALPHA_BETA)
def test_gemv(dtype, trans_a, m, n, alpha, beta):
    gemv = _wrapper("gemv")
    rng = np.random.default_rng(m * 10 + n)
    A = rng.normal(size=(m, n)).astype(dtype)
    x = rng.normal(size=m if trans_a else n).astype(dtype)
    y = rng.normal(size=n if trans_a else m).astype(dtype)
    A0, x0, y0 = A.copy(), x.copy(), y.copy()
    opA = A.T if trans_a else A
    expected = alpha * (opA.astype(np.float64) @ x.astype(np.float64)) + beta * y0
    gemv(trans_a, alpha, A, x, beta, y)
    _close(y, expected, dtype, scale=np.sqrt(max(m, n)))
    np.testing.assert_array_equal(A, A0)
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemv_shape_mismatch_raises(dtype):
    gemv = _wrapper("gemv")
    with pytest.raises(ValueError):
        gemv(False, 1.0, np.zeros((3, 4), dtype), np.zeros(3, dtype), 0.0, np.zeros(3, dtype))
    with pytest.raises(ValueError):
        gemv(True, 1.0, np.zeros((3, 4), dtype), np.zeros(4, dtype), 0.0, np.zeros(3, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 2, 7, 100, 1025])
@pytest.mark.parametrize("alpha", [1.0, -0.5, 0.0, 3.25])
def test_axpy(dtype, n, alpha):
    axpy = _wrapper("axpy")
    rng = np.random.default_rng(n)
    x = rng.normal(size=n).astype(dtype)
    y = rng.normal(size=n).astype(dtype)
    x0, y0 = x.copy(), y.copy()
    axpy(alpha, x, y)
    _close(y, alpha * x0.astype(np.float64) + y0, dtype)
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_axpy_length_mismatch_raises(dtype):
    axpy = _wrapper("axpy")
    with pytest.raises(ValueError):
        axpy(1.0, np.zeros(3, dtype), np.zeros(4, dtype))


# ------------------------------------------------ the packed recurrent GEMM
# Row counts around the micro-kernel's 6-row blocks (cut evenly: 32 rows are
# 6 6 5 5 5 5), column counts around the 64-byte panel width (16 floats,
# 8 doubles), so every remainder path runs; k = 150 packs in 64-row blocks.
PACKED_SHAPES = [(1, 1, 1), (1, 16, 5), (2, 17, 3), (5, 8, 9), (6, 16, 16),
                 (7, 33, 12), (12, 31, 40), (13, 64, 7), (16, 2048 // 8, 64),
                 (32, 40, 9), (3, 20, 150)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("m,n,k", PACKED_SHAPES)
def test_packed_gemm(dtype, transposed, accumulate, m, n, k):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    A = rng.standard_normal((m, k)).astype(dtype)
    B = rng.standard_normal((k, n)).astype(dtype)
    source = np.ascontiguousarray(B.T) if transposed else B
    C0 = rng.standard_normal((m, n)).astype(dtype)
    C = C0.copy()
    panels = blas._packed_gemm(transposed, A, source, accumulate, C)
    expected = A.astype(np.float64) @ B.astype(np.float64)
    if accumulate:
        expected += C0
    _close(C, expected, dtype, scale=np.sqrt(k))
    # the panels: ceil(n / width) blocks of k rows of `width`, zero past n
    width = 64 // np.dtype(dtype).itemsize
    blocks = -(-n // width)
    assert panels.shape == (blocks * width * k,)
    padded = np.zeros((k, blocks * width), dtype)
    padded[:, :n] = B
    expected_panels = padded.reshape(k, blocks, width).transpose(1, 0, 2).ravel()
    np.testing.assert_array_equal(panels, expected_panels)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("k1", [0, 1, 7])
@pytest.mark.parametrize("m,n,k2", PACKED_SHAPES)
def test_packed_gemm_pair(dtype, with_bias, accumulate, k1, m, n, k2):
    """The forward's step product: C (+)= bias + A1·S1ᵀ + A2·S2ᵀ on one set
    of panels stacking S1ᵀ over S2ᵀ (the driver's [U_gᵀ; W_gᵀ])."""
    rng = np.random.default_rng(m * 1000 + n * 10 + k2 + 100000 * k1)
    A1 = rng.standard_normal((m, k1)).astype(dtype)
    S1 = rng.standard_normal((n, k1)).astype(dtype)
    A2 = rng.standard_normal((m, k2)).astype(dtype)
    S2 = rng.standard_normal((n, k2)).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype) if with_bias else None
    C0 = rng.standard_normal((m, n)).astype(dtype)
    C = C0.copy()
    panels = blas._packed_gemm_pair(A1, S1, A2, S2, bias, accumulate, C)
    f64 = np.float64
    expected = A1.astype(f64) @ S1.T.astype(f64) + A2.astype(f64) @ S2.T.astype(f64)
    if with_bias:
        expected += bias
    if accumulate:
        expected += C0
    _close(C, expected, dtype, scale=np.sqrt(k1 + k2))
    # the panels hold [S1ᵀ; S2ᵀ] ((k1 + k2) × n) exactly, zero past n
    k = k1 + k2
    width = 64 // np.dtype(dtype).itemsize
    blocks = -(-n // width)
    padded = np.zeros((k, blocks * width), dtype)
    padded[:, :n] = np.concatenate([S1.T, S2.T])
    expected_panels = padded.reshape(k, blocks, width).transpose(1, 0, 2).ravel()
    np.testing.assert_array_equal(panels, expected_panels)


def test_packed_gemm_on_row_slices():
    """lda/ldc larger than the row: the driver multiplies the live prefix of
    a wider buffer."""
    rng = np.random.default_rng(1)
    A_full = rng.standard_normal((9, 20))
    C_full = rng.standard_normal((9, 30))
    B = rng.standard_normal((20, 30))
    C = C_full.copy()
    blas._packed_gemm(False, A_full, B, True, C)
    np.testing.assert_allclose(C, C_full + A_full @ B, rtol=1e-12, atol=1e-12)


def test_packed_gemm_is_the_vectorised_kernel_with_gcc_or_clang():
    import sysconfig
    compiler = sysconfig.get_config_var("CC") or ""
    if not any(name in compiler for name in ("gcc", "clang", "cc")):
        pytest.skip(f"built with {compiler or 'MSVC'}: the plain-loop fallback")
    assert blas._packed_gemm_fast()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("hidden,batch,threads", [
    (7, 5, 1),
    # split among 2 threads by units (B·G·H·H above the threshold even for
    # the RNN), H not a multiple of the 16-unit panels, two 64-unit chunks
    (100, 32, 2),
])
def test_driver_gives_the_same_with_and_without_packed_weights(
        cell, fused, hidden, batch, threads):
    """The packed step products and BLAS agree inside the driver (float64,
    ragged batch, two layers, both directions, forward and gradients), with
    the input projection inside the step product (`fused`: LSTM and RNN;
    the GRU keeps it apart either way) or one BLAS GEMM before the loop."""
    import crnn
    from fast_paths import fast_path
    model = getattr(crnn, cell.upper())(3, hidden, 4, num_layers=2,
                                         bidirectional=True, dtype="float64",
                                         seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, 9, 3))
    y = rng.integers(0, 4, (batch, 9))
    lengths = rng.integers(1, 10, batch)
    lengths[0] = 9
    previous_threads = crnn.get_num_threads()
    results = {}
    for enabled in (True, False):
        previous = fast_path("packed_gemm")(enabled)
        previous_fused = fast_path("fused_inputs")(fused)
        crnn.set_num_threads(threads)
        try:
            loss, grads = model.loss_and_grad(X, y, lengths=lengths)
            results[enabled] = (model.forward(X, lengths=lengths), loss, grads)
        finally:
            fast_path("packed_gemm")(previous)
            fast_path("fused_inputs")(previous_fused)
            crnn.set_num_threads(previous_threads)
    (p1, l1, g1), (p0, l0, g0) = results[True], results[False]
    np.testing.assert_allclose(p1, p0, rtol=1e-12, atol=1e-13)
    assert abs(l1 - l0) < 1e-12
    assert set(g1) == set(g0)
    for name in g1:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
@pytest.mark.parametrize("threads", [1, 2])
def test_forward_alone_reuses_one_step_of_gates(cell, threads):
    """A forward pass that no BPTT follows forms every step's Z in one
    (B × G·H) block: its workspace is T - 1 blocks per lane smaller than a
    training step's, and its outputs equal those of the pass that keeps Z
    for every step (the projection before the loop, all T blocks)."""
    import crnn
    from fast_paths import fast_path
    T, B, H = 12, 6, 40
    G = {"lstm": 4, "rnn": 1}[cell]
    make = getattr(crnn, cell.upper())
    rng = np.random.default_rng(5)
    X = rng.standard_normal((B, T, 3))
    y = rng.integers(0, 4, (B, T))
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    previous_threads = crnn.get_num_threads()
    crnn.set_num_threads(threads)
    try:
        predictor = make(3, H, 4, num_layers=2, dtype="float64", seed=2)
        trainer = make(3, H, 4, num_layers=2, dtype="float64", seed=2)
        forward_alone = predictor.forward(X, lengths=lengths)
        trainer.loss_and_grad(X, y, lengths=lengths)
        smaller = trainer._workspace.nbytes() - predictor._workspace.nbytes()
        previous = fast_path("fused_inputs")(False)
        try:
            every_step = predictor.forward(X, lengths=lengths)
        finally:
            fast_path("fused_inputs")(previous)
    finally:
        crnn.set_num_threads(previous_threads)
    # two lanes of gates, T - 1 blocks each, at least (the training step
    # also holds gradient buffers)
    assert smaller >= 2 * (T - 1) * B * G * H * 8
    np.testing.assert_allclose(forward_alone, every_step, rtol=1e-12,
                               atol=1e-13)


def assert_switch_keeps_gradients(switch, cell, hidden, dtype, shape, threads,
                                  bidirectional=True, **tolerance):
    """loss_and_grad of a two-layer (bidirectional) `cell` model on ragged
    data of `shape` (B, T, D), at `threads` threads, with `switch` (one of
    a fast_path toggle) on and off: the same loss, and gradients
    equal within `tolerance`."""
    import crnn
    B, T, D = shape
    model = getattr(crnn, cell.upper())(D, hidden, 3, num_layers=2,
                                         bidirectional=bidirectional,
                                         dtype=dtype, seed=B)
    rng = np.random.default_rng(B)
    X = rng.standard_normal(shape)
    y = rng.integers(0, 3, (B, T))
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    previous_threads = crnn.get_num_threads()
    results = {}
    for enabled in (True, False):
        previous = switch(enabled)
        crnn.set_num_threads(threads)
        try:
            results[enabled] = model.loss_and_grad(X, y, lengths=lengths)
        finally:
            switch(previous)
            crnn.set_num_threads(previous_threads)
    (l1, g1), (l0, g0) = results[True], results[False]
    assert l1 == l0     # the forward is untouched
    for name in g1:
        np.testing.assert_allclose(g1[name], g0[name], err_msg=name,
                                   **tolerance)


@pytest.mark.parametrize("cell,hidden", [("rnn", 256), ("lstm", 64), ("lstm", 70),
                                         ("gru", 86), ("gru", 128)])
@pytest.mark.parametrize("threads", [1, 2])
def test_weight_gradients_in_one_product_equal_two(cell, hidden, threads):
    """dU and dW from one product dZᵀ·[X | H_prev] (G·H >= 256) equal the
    two separate products (float64, ragged, two layers, both directions).
    The GRU's one product covers its r and z blocks, where dR = dZ, and
    its n block keeps two."""
    from fast_paths import fast_path
    assert_switch_keeps_gradients(fast_path("merged_weight_gradients"),
                                  cell, hidden, "float64", (7, 6, 5), threads,
                                  rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("cell,hidden,dtype", [("lstm", 64, "float64"),
                                               ("gru", 96, "float64"),
                                               ("rnn", 256, "float32"),
                                               ("rnn", 128, "float64")])
@pytest.mark.parametrize("threads", [1, 2])
def test_weight_gradients_in_chunks_equal_one_product(cell, hidden, dtype,
                                                      threads):
    """The one product for dU and dW taken in chunks of steps inside the
    BPTT loop (CHUNK_ROWS = 512 rows: here 17 steps of 30 rows, three
    chunks) equals it taken once after the loop: ragged lengths, two
    layers, both directions.  The RNN at H = 128 (G·H = 128) shares the
    product only in chunks at one thread: there chunks are compared with
    two products after the loop."""
    from fast_paths import fast_path
    tolerance = ({"rtol": 1e-11, "atol": 1e-13} if dtype == "float64"
                 else {"rtol": 1e-4, "atol": 1e-6})
    assert_switch_keeps_gradients(fast_path("chunked_weight_gradients"),
                                  cell, hidden, dtype, (30, 40, 8), threads,
                                  **tolerance)


@pytest.mark.parametrize("threads", [1, 2])
def test_weight_gradients_in_chunks_keep_one_chunk_of_rows(threads):
    """Taken in chunks, the one product for dU and dW copies one chunk's
    rows [x(t) | h(t-1)] at a time, and its scratch holds that many (32
    steps of 16 rows here), not all T·B: the workspace is (T - 32)·B·(D+H)
    elements smaller than with the product after the loop, and the loss
    and gradients are those of that product (float64)."""
    import crnn
    from fast_paths import fast_path
    T, B, D, H = 100, 16, 8, 64
    rng = np.random.default_rng(9)
    X = rng.standard_normal((B, T, D))
    y = rng.integers(0, 3, (B, T))
    previous_threads = crnn.get_num_threads()
    results = {}
    try:
        crnn.set_num_threads(threads)
        for chunked in (True, False):
            model = crnn.LSTM(D, H, 3, dtype="float64", seed=1)
            previous = fast_path("chunked_weight_gradients")(chunked)
            try:
                results[chunked] = (model.loss_and_grad(X, y),
                                    model._workspace.nbytes())
            finally:
                fast_path("chunked_weight_gradients")(previous)
    finally:
        crnn.set_num_threads(previous_threads)
    ((l1, g1), bytes1), ((l0, g0), bytes0) = results[True], results[False]
    assert bytes0 - bytes1 == (T - 32) * B * (D + H) * 8
    assert l1 == l0
    for name in g1:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-11, atol=1e-13,
                                   err_msg=name)


@pytest.mark.parametrize("cell,hidden,dtype", [("lstm", 20, "float64"),
                                               ("gru", 33, "float64"),
                                               ("rnn", 40, "float64"),
                                               ("lstm", 64, "float32")])
@pytest.mark.parametrize("threads", [1, 2])
def test_output_gradient_in_the_step_product_equals_a_gemm(cell, hidden,
                                                           dtype, threads):
    """The top lane's dH(t) = dR(t+1)·W + dY(t)·V in one step product on
    [W; V] panels equals dY·V from one GEMM before BPTT, added in the
    point-wise pass: ragged lengths (rows start at different steps), two
    layers of one direction (the lower one keeps its own path)."""
    from fast_paths import fast_path
    tolerance = ({"rtol": 1e-11, "atol": 1e-13} if dtype == "float64"
                 else {"rtol": 1e-4, "atol": 1e-6})
    assert_switch_keeps_gradients(fast_path("outputs_in_step"), cell, hidden,
                                  dtype, (9, 12, 5), threads,
                                  bidirectional=False, **tolerance)


@pytest.mark.parametrize("cell,hidden,dtype", [("lstm", 40, "float64"),
                                               ("gru", 70, "float64"),
                                               ("rnn", 200, "float64"),
                                               ("gru", 48, "float32")])
@pytest.mark.parametrize("threads", [1, 2])
def test_bias_sums_in_the_steps_equal_one_pass_after(cell, hidden, dtype,
                                                     threads):
    """db (and the GRU's recurrent-bias gradient) summed inside BPTT's
    steps, each part of the team its own units, equals one pass over every
    row of dZ after the loop: ragged lengths (dead rows are not summed),
    two layers, both directions, H not a multiple of the panels."""
    from fast_paths import fast_path
    tolerance = ({"rtol": 1e-12, "atol": 1e-14} if dtype == "float64"
                 else {"rtol": 1e-5, "atol": 1e-6})
    assert_switch_keeps_gradients(fast_path("bias_sums_in_steps"), cell,
                                  hidden, dtype, (16, 20, 6), threads,
                                  **tolerance)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_token_model_packs_its_second_layer_with_the_inputs(cell):
    """A token model's first layer gathers Z from Uᵀ and its step product
    adds h·Wᵀ; the second layer's dense inputs go inside the step product.
    Both agree with BLAS (float64, forward and gradients)."""
    import crnn
    from fast_paths import fast_path
    model = getattr(crnn, cell.upper())(11, 20, 11, num_layers=2,
                                         dtype="float64", seed=1)
    rng = np.random.default_rng(1)
    X = rng.integers(0, 11, (6, 8))
    y = rng.integers(0, 11, (6, 8))
    results = {}
    for enabled in (True, False):
        previous = fast_path("packed_gemm")(enabled)
        try:
            results[enabled] = (model.forward(X), *model.loss_and_grad(X, y))
        finally:
            fast_path("packed_gemm")(previous)
    (p1, l1, g1), (p0, l0, g0) = results[True], results[False]
    np.testing.assert_allclose(p1, p0, rtol=1e-12, atol=1e-13)
    assert abs(l1 - l0) < 1e-12
    for name in g1:
        np.testing.assert_allclose(g1[name], g0[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)
