"""Drive every part of crnn's compiled code once, small, for valgrind memcheck.

    python tools/memcheck_exercise.py CRNN_DIR             # the exercise (run under valgrind)
    python tools/memcheck_exercise.py --report XML CRNN_DIR

The exercise imports crnn (which must come from CRNN_DIR, the package built
for the check) and runs: forward / loss_and_grad (every cell, 1-2 layers,
both directions, every output kind, many-to-many and many-to-one, ragged
lengths, tokens and features, initial states, float32 and float64), streams,
sample, every optimizer, a short Trainer.fit with truncated BPTT, and
save/load.  Runs under tools/memcheck.sh; about a minute under valgrind.

--report reads valgrind's XML output and exits 1 if any error's innermost
frame outside libc's string functions and valgrind's own replacements is in
a shared object under CRNN_DIR (crnn's code), printing those errors; other
errors (CPython, numpy, OpenBLAS) and leaks are counted and summarised only.
"""
import collections
import itertools
import os
import sys
import tempfile
import xml.etree.ElementTree as ElementTree

# frames that only move memory for their caller: the error is the caller's
PASS_THROUGH = ("memcpy", "memmove", "memset", "mempcpy", "strlen", "memcmp", "bcmp",
                "__memcpy", "__memmove", "__memset", "__mempcpy", "__GI_mem")


def exercise(crnn_dir):
    import numpy as np

    import crnn
    from crnn import optim

    where = os.path.dirname(os.path.abspath(crnn.__file__))
    if os.path.realpath(where) != os.path.realpath(crnn_dir):
        sys.exit(f"crnn was imported from {where}, not {crnn_dir}")
    rng = np.random.default_rng(0)
    D, H, K = 3, 4, 3
    def original_gru(*args, **kwargs):
        return crnn.GRU(*args, reset_after=False, **kwargs)

    classes = [crnn.RNN, crnn.LSTM, crnn.GRU, original_gru]
    for cls, layers, bidirectional, output, sequences, dtype, tokens in itertools.product(
            classes, (1, 2), (False, True), ("softmax", "linear", None), (True, False),
            ("float32", "float64"), (False, True)):
        if tokens and (layers == 2 or output == "linear"):
            continue                                 # keep the run short
        model = cls(D, H, None if output is None else K, num_layers=layers,
                    bidirectional=bidirectional, output=output,
                    return_sequences=sequences, dtype=dtype, seed=1)
        N, T = 3, 5
        X = rng.integers(0, D, size=(N, T)) if tokens else rng.normal(size=(N, T, D))
        lengths = np.array([5, 2, 4])
        h0 = rng.normal(size=(layers * (2 if bidirectional else 1), N, H))
        state = (h0, h0) if cls is crnn.LSTM else h0
        Y, final = model.forward(X, lengths=lengths, initial_state=state, return_state=True)
        assert np.isfinite(Y).all()
        if output is not None:
            if output == "softmax":
                y = rng.integers(0, K, size=(N, T) if sequences else (N,))
            else:
                y = rng.normal(size=(N, T, K) if sequences else (N, K))
            loss, grads, dstate = model.loss_and_grad(X, y, lengths=lengths,
                                                      initial_state=state,
                                                      return_state_grad=True)
            assert np.isfinite(loss)
            model.predict(X, lengths=lengths)
        if not bidirectional:
            stream = model.stream(N)
            stream.state = state
            for t in range(T):
                stream.step(X[:, t])
            one = model.stream(1)
            one.step(int(X[0, 0]) if tokens else X[0, 0])
    token_model = crnn.LSTM(5, 6, seed=2, num_layers=2)
    token_model.sample(8, prime=[1, 2, 3], temperature=0.7, seed=1)
    for name in ("sgd", "momentum", "adam", "rmsprop", "adagrad"):
        model = crnn.GRU(D, H, K, seed=3)
        trainer = crnn.Trainer(model, name, lr=0.01, batch_size=2, clip_norm=1.0, seed=0)
        X = rng.normal(size=(5, 6, D))
        y = rng.integers(0, K, size=(5, 6))
        trainer.fit(X, y, lengths=[6, 3, 5, 2, 6], epochs=2, verbose=0,
                    validation_data=(X, y), bptt=3 if name == "adam" else None)
        trainer.evaluate(X, y)
    optim.Adam(lr=0.1).step({"w": np.ones(7)}, {"w": np.ones(7)})
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.npz")
        model.save(path)
        crnn.load(path).forward(X)
    print("memcheck exercise: done")


def report(xml_path, crnn_dir):
    crnn_dir = os.path.realpath(crnn_dir)
    tree = ElementTree.parse(xml_path)
    ours, others = [], collections.Counter()
    for error in tree.getroot().iter("error"):
        if (error.findtext("kind") or "").startswith("Leak_"):
            # leaks are not what this checks (CPython and numpy keep memory
            # until exit); numpy's import reports them even with --leak-check=no
            others["Leak_*", "(all objects)"] += 1
            continue
        stack = error.find("stack")
        frames = [] if stack is None else stack.findall("frame")
        innermost = ""
        for frame in frames:
            fn = frame.findtext("fn") or ""
            obj = frame.findtext("obj") or ""
            if fn.startswith(PASS_THROUGH) or "vgpreload" in obj:
                continue
            innermost = os.path.realpath(obj) if obj else ""
            break
        if innermost.startswith(crnn_dir + os.sep):
            ours.append(error)
        else:
            others[error.findtext("kind"), os.path.basename(innermost) or "?"] += 1
    for error in ours:
        print(f"--- {error.findtext('kind')}: "
              f"{error.findtext('what') or error.findtext('xwhat/text')}")
        for frame in error.find("stack").findall("frame")[:12]:
            print(f"    {frame.findtext('fn') or '?'}  "
                  f"{frame.findtext('file') or frame.findtext('obj') or ''}"
                  f":{frame.findtext('line') or ''}")
    if others:
        print("errors elsewhere, by kind and innermost object (not counted):")
        for (kind, obj), count in others.most_common(15):
            print(f"    {count:6d}  {kind}  {obj}")
    print(f"valgrind: {len(ours)} error(s) in crnn's code, "
          f"{sum(others.values())} elsewhere (not counted)")
    return 1 if ours else 0


if __name__ == "__main__":
    if sys.argv[1] == "--report":
        sys.exit(report(sys.argv[2], sys.argv[3]))
    exercise(sys.argv[1])
