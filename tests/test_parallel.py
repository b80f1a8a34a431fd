"""crnn's own threads (crnn.set_num_threads): each time step split by hidden
units, the output layer and its loss by time steps.  Results must not depend
on the thread count, concurrent callers must not trip over the shared team,
and a forked child must work."""
import os
import select
import threading

import numpy as np
import pytest

import crnn
from crnn.threads import default_num_threads

# B·G·H·H = 16·4·64·64 multiply-adds per step: above the parallel threshold
SHAPE = dict(T=12, B=16, D=8, H=64, K=5)


@pytest.fixture
def restore_threads():
    before = crnn.get_num_threads()
    yield
    crnn.set_num_threads(before)


def batch(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((SHAPE["B"], SHAPE["T"], SHAPE["D"])).astype(dtype)
    y = rng.integers(0, SHAPE["K"], (SHAPE["B"], SHAPE["T"]))
    lengths = rng.integers(1, SHAPE["T"] + 1, SHAPE["B"])
    lengths[0] = SHAPE["T"]
    return X, y, lengths


def compute(model, X, y, lengths):
    loss, grads = model.loss_and_grad(X, y, lengths=lengths)
    return model.forward(X, lengths=lengths), loss, grads


def assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1] == b[1]
    for name in a[2]:
        np.testing.assert_array_equal(a[2][name], b[2][name], err_msg=name)


def test_set_and_get(restore_threads):
    crnn.set_num_threads(3)
    assert crnn.get_num_threads() == 3      # a team on POSIX and on Windows
    crnn.set_num_threads(1)
    assert crnn.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        crnn.set_num_threads(0)
    assert crnn.get_num_threads() == 1


def test_default_follows_the_environment():
    assert default_num_threads({"CRNN_NUM_THREADS": "3", "OMP_NUM_THREADS": "2"}) == 3
    assert default_num_threads({"OMP_NUM_THREADS": "4,2"}) == 4
    assert default_num_threads({"OPENBLAS_NUM_THREADS": "2"}) == 2
    assert default_num_threads({"OMP_NUM_THREADS": "zero", "OPENBLAS_NUM_THREADS": "5"}) == 5
    assert default_num_threads({}) >= 1


@pytest.mark.parametrize("cell", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_the_thread_count(cell, dtype, restore_threads):
    model = getattr(crnn, cell)(SHAPE["D"], SHAPE["H"], SHAPE["K"], num_layers=2,
                                dtype=np.dtype(dtype).name, seed=1)
    data = batch(dtype=dtype)
    results = []
    for threads in (1, 2, 3):
        crnn.set_num_threads(threads)
        results.append(compute(model, *data))
    for other in results[1:]:
        assert_same(results[0], other)


@pytest.mark.parametrize("cell,hidden", [("LSTM", 260), ("GRU", 300), ("RNN", 520)])
def test_weights_packed_on_the_team_give_the_same(cell, hidden, restore_threads):
    """Packing the forward's [Uᵀ; Wᵀ] and BPTT's W is shared out among the
    threads by units when G·H·(D+H) and G·H·H pass the parallel threshold
    (H not a multiple of the 16-unit panels): the outputs are bit-identical
    on 1, 2 and 3 threads, and the gradients agree (their BLAS products
    are split by rows, README, Threads)."""
    T, B, D, K = 6, 3, 5, 4
    model = getattr(crnn, cell)(D, hidden, K, dtype="float64", seed=4)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((B, T, D))
    y = rng.integers(0, K, (B, T))
    lengths = np.array([T, 4, 2])
    results = []
    for threads in (1, 2, 3):
        crnn.set_num_threads(threads)
        results.append(compute(model, X, y, lengths))
    for other in results[1:]:
        np.testing.assert_array_equal(other[0], results[0][0])
        assert other[1] == pytest.approx(results[0][1], rel=1e-13)
        for name in other[2]:
            np.testing.assert_allclose(other[2][name], results[0][2][name],
                                       rtol=1e-11, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("cell,hidden", [("LSTM", 200), ("GRU", 72), ("RNN", 520)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [2, 3])
def test_steps_in_pieces_equal_one_share_per_thread(cell, hidden, dtype, threads,
                                                    restore_threads):
    """A time step's units cut into pieces that the threads take as they
    come, a faster thread taking what is left of a slower one's share
    (crnn._step's step_part), give bit-identical outputs, loss and gradients
    to one equal share per thread.  H is not a multiple of the pieces
    (200: 13 panels; 520 at 2 threads: 9 pieces of 64 units, the last 8),
    ragged lengths, two layers, both directions."""
    from fast_paths import fast_path
    T, B, D, K = 9, 12, 6, 4
    model = getattr(crnn, cell)(D, hidden, K, num_layers=2, bidirectional=True,
                                dtype=np.dtype(dtype).name, seed=hidden)
    rng = np.random.default_rng(hidden)
    X = rng.standard_normal((B, T, D)).astype(dtype)
    y = rng.integers(0, K, (B, T))
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    crnn.set_num_threads(threads)
    results = {}
    for enabled in (True, False):
        previous = fast_path("step_pieces")(enabled)
        try:
            results[enabled] = compute(model, X, y, lengths)
        finally:
            fast_path("step_pieces")(previous)
    assert_same(results[True], results[False])


@pytest.mark.parametrize("output", ["softmax", "linear"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_output_layer_split_by_steps_gives_the_same(output, bidirectional,
                                                    restore_threads):
    """T·B·K·H above the parallel threshold (12·16·300·64), ragged lengths:
    outputs, loss and gradients agree on 1, 2 and 3 threads.  Not to the
    bit: each part's BLAS product has fewer rows, and OpenBLAS picks its
    kernel by shape (README, Threads)."""
    T, B, D, H, K = 12, 16, 8, 64, 300
    model = crnn.LSTM(D, H, K, bidirectional=bidirectional, output=output,
                      dtype="float64", seed=2)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((B, T, D))
    y = (rng.integers(0, K, (B, T)) if output == "softmax"
         else rng.standard_normal((B, T, K)))
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    results = []
    for threads in (1, 2, 3):
        crnn.set_num_threads(threads)
        results.append(compute(model, X, y, lengths))
    for other in results[1:]:
        np.testing.assert_allclose(other[0], results[0][0], rtol=1e-13, atol=1e-15)
        assert other[1] == pytest.approx(results[0][1], rel=1e-13)
        for name in other[2]:
            np.testing.assert_allclose(other[2][name], results[0][2][name],
                                       rtol=1e-11, atol=1e-14, err_msg=name)
    # rows past a length are zero in the outputs
    outputs = results[0][0]
    for b in range(B):
        assert not outputs[b, lengths[b]:].any()


def test_concurrent_callers_share_the_team(restore_threads):
    """Six Python threads, each its own model, all in packed GEMMs at once:
    the one that owns the team splits its products, the others compute
    alone, and every result equals the one-thread result."""
    crnn.set_num_threads(2)
    models = [crnn.LSTM(SHAPE["D"], SHAPE["H"], SHAPE["K"], seed=i) for i in range(6)]
    data = [batch(seed=i) for i in range(6)]
    crnn.set_num_threads(1)
    expected = [compute(m, *d) for m, d in zip(models, data)]
    crnn.set_num_threads(2)
    failures = []

    def worker(i):
        try:
            for _ in range(5):
                assert_same(compute(models[i], *data[i]), expected[i])
        except BaseException as error:   # reported below
            failures.append((i, error))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not failures, failures


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
# Python 3.12+ warns that forking a threaded process may deadlock the
# child: that is the case this test exists for.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_computes(restore_threads):
    """The team's workers do not survive fork(): the child must start its
    own instead of waiting for threads that are not there."""
    crnn.set_num_threads(2)
    model = crnn.LSTM(SHAPE["D"], SHAPE["H"], SHAPE["K"], seed=0)
    data = batch()
    expected = compute(model, *data)[1]       # the parent's team is running
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # child
        try:
            loss = compute(model, *data)[1]
            os.write(write, repr(loss).encode())
        finally:
            os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 120)
    if not ready:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in loss_and_grad")
    message = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert float(message) == expected


def test_blas_is_held_at_one_thread_only_while_a_call_runs(restore_threads):
    """Every BLAS library of the process (numpy's and SciPy's OpenBLAS in
    the wheels) at one thread while a call runs, as it was after."""
    from crnn import threads
    controllers = threads._blas_controls().controllers
    if not controllers:
        pytest.skip("no BLAS thread controls found (see test_thread_rules.py)")

    def counts():
        return [c.get_num_threads() for c in controllers]

    before = counts()
    for controller in controllers:
        controller.set_num_threads(2)
    try:
        crnn.set_num_threads(2)
        with threads.single_threaded_blas():
            assert counts() == [1] * len(controllers)
            with threads.single_threaded_blas():   # a second caller
                assert counts() == [1] * len(controllers)
            assert counts() == [1] * len(controllers)   # the first still runs
        assert counts() == [2] * len(controllers)
        with threads.single_threaded_blas(work=1000):
            assert counts() == [2] * len(controllers)   # too small to split
        with pytest.raises(RuntimeError):
            with threads.single_threaded_blas():
                raise RuntimeError("a failing call")
        assert counts() == [2] * len(controllers)       # restored all the same
        crnn.set_num_threads(1)
        with threads.single_threaded_blas():
            assert counts() == [2] * len(controllers)   # one crnn thread: untouched
    finally:
        for controller, count in zip(controllers, before):
            controller.set_num_threads(count)


def test_split_blas_products_equal_unsplit_ones(restore_threads):
    """Large BLAS products split among crnn's threads (while BLAS is held at
    one thread) give the same numbers as BLAS alone."""
    from crnn import _parallel
    rng = np.random.default_rng(3)
    A = rng.standard_normal((300, 200))
    B = rng.standard_normal((200, 100))
    expected = np.zeros((300, 100))
    _parallel._gemm(False, False, 1.0, A, B, 0.0, expected)
    crnn.set_num_threads(2)
    previous = _parallel.split_gemms(True)
    try:
        for trans_a, trans_b in [(False, False), (True, False), (False, True), (True, True)]:
            a = np.ascontiguousarray(A.T) if trans_a else A
            b = np.ascontiguousarray(B.T) if trans_b else B
            for shape in [(300, 100), (100, 300)]:
                if shape == (100, 300):   # the transposed product: split by columns
                    a2, b2 = (np.ascontiguousarray(b.T), np.ascontiguousarray(a.T))
                    out = np.zeros(shape)
                    _parallel._gemm(trans_b, trans_a, 1.0, a2, b2, 0.0, out)
                    np.testing.assert_allclose(out, expected.T, rtol=1e-12, atol=1e-11)
                else:
                    out = np.zeros(shape)
                    _parallel._gemm(trans_a, trans_b, 1.0, a, b, 0.0, out)
                    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-11)
    finally:
        _parallel.split_gemms(previous)


@pytest.mark.parametrize("threads", [2, 3])
def test_long_thin_products_split_by_k_equal_unsplit_ones(restore_threads,
                                                           threads):
    """A product with k >= 4·max(m, n) (a weight gradient) is split by k:
    part 0 accumulates into C with beta, the others into their own blocks,
    added in part order.  Every transpose, alpha and beta; 3 threads ask
    for more parts than a team of 2 may have."""
    from crnn import _parallel
    rng = np.random.default_rng(4)
    m, n, k = 40, 30, 2000
    A = rng.standard_normal((m, k))
    B = rng.standard_normal((k, n))
    C0 = rng.standard_normal((m, n))
    expected = 0.5 * C0 + 1.5 * (A @ B)
    crnn.set_num_threads(threads)
    previous = _parallel.split_gemms(True)
    try:
        for trans_a, trans_b in [(False, False), (True, False), (False, True), (True, True)]:
            a = np.ascontiguousarray(A.T) if trans_a else A
            b = np.ascontiguousarray(B.T) if trans_b else B
            out = C0.copy()
            _parallel._gemm(trans_a, trans_b, 1.5, a, b, 0.5, out)
            np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-11)
            # and the same with the split by k turned off (bands of rows)
            was = _parallel.use_k_split(False)
            try:
                banded = C0.copy()
                _parallel._gemm(trans_a, trans_b, 1.5, a, b, 0.5, banded)
            finally:
                _parallel.use_k_split(was)
            np.testing.assert_allclose(out, banded, rtol=1e-12, atol=1e-11)
    finally:
        _parallel.split_gemms(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_workspace_buffers_start_on_a_cache_line(dtype):
    """Threads write neighbouring units of one row: with buffers on a cache
    line, a part's edge (a multiple of 16 units) never splits a line."""
    from crnn._call import Workspace
    ws = Workspace()
    for size in (1, 7, 1000, 123457):
        view = ws.get(f"b{size}", (size,), dtype)
        assert view.ctypes.data % 64 == 0
        assert view.shape == (size,) and view.dtype == dtype
