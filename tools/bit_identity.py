"""Bit-identity of the engine: record every result of a matrix of models,
then check that a rebuilt engine gives exactly the same bits.

    python tools/bit_identity.py record   # writes tools/bit_identity.json
    python tools/bit_identity.py check    # exit 1 on any difference

For every cell, 1-2 layers, one or two directions, dense or token inputs,
equal or mixed lengths, float32 and float64, two sizes (a small one, and one
large enough for the packed kernels, the merged weight-gradient product and
the thread team) and 1 and 2 threads, it records the forward outputs, the
final states, the loss, every gradient and the initial-state gradient, and
(one-direction models) 3 streaming steps.  Each array is kept as a SHA-256 of
its bytes with its sum beside it (to read a difference by eye).

The bits depend on the BLAS kernel, so a record is kept per OpenBLAS setting
(OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE, as the environment gives them); `check`
compares against the record of the setting it runs under and fails where it
has none.
"""
import hashlib
import itertools
import json
import os
import sys
import zlib

import numpy as np

import crnn

RECORD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bit_identity.json")

CELLS = {
    "rnn_tanh": lambda **kw: crnn.RNN(nonlinearity="tanh", **kw),
    "rnn_relu": lambda **kw: crnn.RNN(nonlinearity="relu", **kw),
    "lstm": lambda **kw: crnn.LSTM(**kw),
    "gru": lambda **kw: crnn.GRU(**kw),
}
# (T, N, D, H, K)
SIZES = {"small": (6, 3, 5, 8, 4), "large": (40, 16, 24, 64, 24),
         "wide": (24, 32, 32, 128, 32)}


def setting():
    return "/".join(os.environ.get(name, "-")
                    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))


def digest(array):
    array = np.ascontiguousarray(array)
    return [hashlib.sha256(array.tobytes()).hexdigest()[:24],
            float(np.asarray(array, np.float64).sum())]


def configurations():
    for cell, size, layers, bidirectional, tokens, mixed, dtype, threads in itertools.product(
            CELLS, SIZES, (1, 2), (False, True), (False, True), (False, True),
            ("float32", "float64"), (1, 2)):
        yield (f"{cell}-{size}-L{layers}-{'bi' if bidirectional else 'uni'}-"
               f"{'tok' if tokens else 'dense'}-{'mixed' if mixed else 'full'}-"
               f"{dtype}-t{threads}"), (cell, size, layers, bidirectional, tokens,
                                         mixed, dtype, threads)


def run_one(cell, size, layers, bidirectional, tokens, mixed, dtype, threads):
    T, N, D, H, K = SIZES[size]
    rng = np.random.default_rng(zlib.crc32(repr(
        (cell, size, layers, bidirectional, tokens, mixed, dtype)).encode()))
    # output kinds and sequence modes vary with the configuration
    seq = not (mixed and not tokens and layers == 2)
    output = "softmax" if tokens or not bidirectional else "linear"
    model = CELLS[cell](input_size=D, hidden_size=H, output_size=K,
                        num_layers=layers, bidirectional=bidirectional,
                        output=output, return_sequences=seq, dtype=dtype,
                        seed=7)
    if tokens:
        X = rng.integers(0, D, size=(N, T))
    else:
        X = rng.normal(size=(N, T, D))
    lengths = rng.integers(1, T + 1, size=N) if mixed else None
    if lengths is not None:
        lengths[0] = T
    shape = (layers * (2 if bidirectional else 1), N, H)
    h0 = rng.normal(scale=0.3, size=shape)
    state = (h0, rng.normal(scale=0.3, size=shape)) if cell == "lstm" else h0
    if output == "softmax":
        y = rng.integers(0, K, size=(N, T) if seq else (N,))
    else:
        y = rng.normal(size=(N, T, K) if seq else (N, K))
    crnn.set_num_threads(threads)
    result = {}
    outputs, final = model.forward(X, lengths, initial_state=state, return_state=True)
    result["outputs"] = digest(outputs)
    for i, part in enumerate(final if isinstance(final, tuple) else (final,)):
        result[f"final{i}"] = digest(part)
    loss, grads, dstate = model.loss_and_grad(X, y, lengths, initial_state=state,
                                              return_state_grad=True)
    result["loss"] = [float(loss).hex(), loss]
    for name in sorted(grads):
        result[f"d{name}"] = digest(grads[name])
    for i, part in enumerate(dstate if isinstance(dstate, tuple) else (dstate,)):
        result[f"dstate{i}"] = digest(part)
    if not bidirectional:
        stream = model.stream(batch_size=N)
        for t in range(3):
            step = X[:, t] if tokens else X[:, t, :]
            result[f"stream{t}"] = digest(stream.step(step))
    return result


def measure():
    saved = crnn.get_num_threads()
    try:
        return {key: run_one(*config) for key, config in configurations()}
    finally:
        crnn.set_num_threads(saved)


def main(argv):
    if len(argv) != 2 or argv[1] not in ("record", "check"):
        print(__doc__)
        return 2
    records = {}
    if os.path.exists(RECORD):
        with open(RECORD) as f:
            records = json.load(f)
    key = setting()
    results = measure()
    if argv[1] == "record":
        records[key] = results
        with open(RECORD, "w") as f:
            json.dump(records, f, indent=0, sort_keys=True)
        print(f"recorded {len(results)} configurations for OpenBLAS setting {key}")
        return 0
    if key not in records:
        print(f"no record for OpenBLAS setting {key}; recorded: {sorted(records)}")
        return 1
    expected, differences = records[key], 0
    for config, arrays in results.items():
        for name, value in arrays.items():
            want = expected.get(config, {}).get(name)
            if want is None or want[0] != value[0]:
                differences += 1
                if differences <= 20:
                    print(f"DIFFERS {config} {name}: {want} -> {value}")
    missing = set(expected) - set(results)
    print(f"{len(results)} configurations under {key}: {differences} arrays differ, "
          f"{len(missing)} recorded configurations not run")
    return 1 if differences or missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
