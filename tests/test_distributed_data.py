"""Data sets larger than memory (issue 18): the Trainer reads np.memmap
files and other array-likes (len() and fancy indexing) batch by batch,
touching only the rows of its batches — under MPI only its own share."""
import os
import sys

import numpy as np
import pytest

import crnn
import distributed_cases
from distributed_cases import RecordingRows


def test_memmap_trains_exactly_like_the_same_arrays_in_memory(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 6, size=(26, 12))
    targets = rng.integers(0, 6, size=(26, 12))
    lengths = rng.integers(2, 13, size=26)
    X = np.memmap(tmp_path / "X", dtype=np.uint8, mode="w+", shape=tokens.shape)
    X[:] = tokens
    y = np.memmap(tmp_path / "y", dtype=np.uint16, mode="w+", shape=targets.shape)
    y[:] = targets
    runs = []
    for data in ((tokens, targets), (X, y)):
        model = crnn.LSTM(6, 8, 6, dtype="float64", seed=1)
        trainer = crnn.Trainer(model, batch_size=7, seed=2)
        history = trainer.fit(*data, lengths, epochs=3, bptt=5, verbose=0,
                              validation_data=(data[0][20:], data[1][20:], lengths[20:]))
        runs.append((model.params, history.history))
    for name, value in runs[0][0].items():
        np.testing.assert_array_equal(runs[1][0][name], value, err_msg=name)
    assert runs[1][1]["val_loss"] == runs[0][1]["val_loss"]
    assert runs[1][1]["loss"] == runs[0][1]["loss"]


def test_an_array_like_is_read_batch_by_batch():
    rng = np.random.default_rng(3)
    features = rng.normal(size=(40, 6, 3))
    labels = rng.integers(0, 4, size=40)
    X, y = RecordingRows(features), RecordingRows(labels)
    model = crnn.GRU(3, 5, 4, return_sequences=False, dtype="float64", seed=0)
    history = crnn.Trainer(model, batch_size=8, seed=1).fit(X, y, epochs=2, verbose=0)
    # the first rows once for the up-front checks, then each row once per epoch
    assert len(X.read) == 8 + 2 * 40 and sorted(X.read[8:]) == sorted(2 * list(range(40)))
    reference = crnn.GRU(3, 5, 4, return_sequences=False, dtype="float64", seed=0)
    expected = crnn.Trainer(reference, batch_size=8, seed=1).fit(
        features, labels, epochs=2, verbose=0)
    assert history.history["loss"] == expected.history["loss"]
    for name, value in reference.params.items():
        np.testing.assert_array_equal(model.params[name], value)


def test_bad_array_likes_are_refused_up_front():
    model = crnn.RNN(3, 4, 2, dtype="float64", seed=0)
    trainer = crnn.Trainer(model)
    X = RecordingRows(np.zeros((5, 4, 3)))
    with pytest.raises(ValueError, match="y holds 4 targets, X 5 sequences"):
        trainer.fit(X, RecordingRows(np.zeros((4, 4), dtype=int)), verbose=0)
    with pytest.raises(ValueError, match=r"lengths must be between 1 and T = 4, got "
                                         r"values from 1 to 9"):
        trainer.fit(X, RecordingRows(np.zeros((5, 4), dtype=int)),
                    np.array([1, 2, 3, 4, 9]), verbose=0)
    with pytest.raises(ValueError, match="X has 2 features, the model expects 3"):
        trainer.fit(RecordingRows(np.zeros((5, 4, 2))),
                    RecordingRows(np.zeros((5, 4), dtype=int)), verbose=0)
    with pytest.raises(TypeError, match="y must be an array-like with len"):
        trainer.fit(X, 3, verbose=0)


def test_under_mpi_each_rank_reads_only_its_share(tmp_path):
    pytest.importorskip("mpi4py", reason='needs mpi4py: pip install "crnn[mpi]"')
    from test_distributed import launch
    launch(2, tmp_path, "touched")
    reads = [np.load(tmp_path / f"touched.rank{r}.npz")["rows"] for r in range(2)]
    sample = set(range(8))                 # the up-front checks, on every rank
    shares = [set(r[8:].tolist()) for r in reads]
    assert not shares[0] & shares[1]
    assert shares[0] | shares[1] == set(range(40))
    assert all(len(r) == 8 + len(s) for r, s in zip(reads, shares))
    assert all(10 <= len(s) <= 30 for s in shares)


# ------------------------------------------------------------ crnn train on a corpus

from crnn import cli, corpus                 # noqa: E402
from crnn import io as crnn_io               # noqa: E402

FAST = ["--hidden", "16", "--seq-length", "8", "--chunks", "2", "--batch-size", "6",
        "--quiet", "--sample-length", "20", "--epochs", "2"]


def write_corpus(folder):
    """Three files in a nested folder (sorted order: a.txt, b/c.txt, b/d.md),
    with multi-byte characters; returns their concatenated text."""
    texts = {"a.txt": "héllo wörld, the quick brown fox. " * 40,
             "b/c.txt": "λx. x + 1 — jumps over the lazy dog\n" * 30,
             "b/d.md": "# notes: 3 × 4 = 12 ✓\n" * 25}
    for name, text in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    (folder / ".hidden").write_text("skipped \0")
    return "".join(texts[name] for name in sorted(texts))


def test_a_folder_trains_like_the_same_text_in_one_file(tmp_path):
    text = write_corpus(tmp_path / "corpus")
    (tmp_path / "all.txt").write_text(text, encoding="utf-8")
    cache = tmp_path / "cache"
    previous = crnn.get_num_threads()
    crnn.set_num_threads(1)
    try:
        for source, model in ((["all.txt"], "one.npz"), (["corpus"], "folder.npz")):
            argv = ["train", *[str(tmp_path / s) for s in source], *FAST,
                    "--cache", str(cache), "--model", str(tmp_path / model)]
            assert cli.main(argv, out=open(os.devnull, "w")) == 0
    finally:
        crnn.set_num_threads(previous)
    one, folder = (crnn_io.load_checkpoint(str(tmp_path / m)) for m in ("one.npz", "folder.npz"))
    assert folder["extra"]["vocabulary"] == "".join(sorted(set(text)))
    for name, value in one["model"].params.items():
        np.testing.assert_array_equal(folder["model"].params[name], value, err_msg=name)
    # the cache: one file of uint8 ids, one per character
    tokens = list(cache.glob("*.tokens"))
    assert len(tokens) == 1 and tokens[0].stat().st_size == len(text)


def test_the_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path):
    text = write_corpus(tmp_path / "corpus")
    ids, vocabulary, files = corpus.token_cache([tmp_path / "corpus"], tmp_path / "c")
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint8 and not ids.flags.writeable
    assert [os.path.relpath(f, tmp_path / "corpus") for f in files] == \
        ["a.txt", os.path.join("b", "c.txt"), os.path.join("b", "d.md")]
    assert "".join(vocabulary[i] for i in ids) == text
    built = next((tmp_path / "c").glob("*.tokens")).stat().st_mtime_ns
    again, _, _ = corpus.token_cache([tmp_path / "corpus"], tmp_path / "c")
    assert next((tmp_path / "c").glob("*.tokens")).stat().st_mtime_ns == built
    with open(tmp_path / "corpus" / "a.txt", "a", encoding="utf-8") as handle:
        handle.write("more")
    changed, _, _ = corpus.token_cache([tmp_path / "corpus"], tmp_path / "c")
    assert len(changed) == len(again) + 4
    assert len(list((tmp_path / "c").glob("*.tokens"))) == 2
    limited, _, _ = corpus.token_cache([tmp_path / "corpus"], tmp_path / "c", max_chars=100)
    assert len(limited) == 100


def test_multibyte_characters_across_read_boundaries(tmp_path, monkeypatch):
    text = "aé€𝄞" * 50 + "".join(chr(0x400 + i) for i in range(300))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x.txt").write_text(text, encoding="utf-8")
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 7)       # every boundary splits one
    ids, vocabulary, _ = corpus.token_cache([tmp_path / "t"], tmp_path / "c")
    assert ids.dtype == np.uint16 and len(vocabulary) == len(set(text)) > 256
    assert "".join(vocabulary[i] for i in ids) == text


def test_bad_corpora_are_refused_naming_the_file(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.txt").write_text("fine text " * 50)
    (tmp_path / "mixed" / "b.bin").write_bytes(b"abc\0\1\2" * 10)
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "l.txt").write_bytes("café ".encode("latin-1") * 30)
    for folder, fragment in (("empty", "a folder with no text files"),
                             ("mixed", "b.bin: looks like a binary file"),
                             ("latin", "l.txt: is not UTF-8 text")):
        status = cli.main(["train", str(tmp_path / folder), str(tmp_path / "mixed" / "a.txt"),
                           "--cache", str(tmp_path / "c"), "--model",
                           str(tmp_path / "m.npz")], out=open(os.devnull, "w"))
        err = capsys.readouterr().err
        assert status == 2 and fragment in err and "Traceback" not in err, err
    assert not (tmp_path / "m.npz").exists()
    with pytest.raises(corpus.CorpusError, match="missing: no such file or folder"):
        corpus.token_cache([tmp_path / "missing"], tmp_path / "c")


def test_mpiexec_trains_on_a_folder(tmp_path):
    pytest.importorskip("mpi4py", reason='needs mpi4py: pip install "crnn[mpi]"')
    import subprocess
    from test_distributed import environment, mpiexec
    write_corpus(tmp_path / "corpus")
    done = subprocess.run(
        [mpiexec(), "-n", "2", os.path.join(os.path.dirname(sys.executable), "crnn"),
         "train", str(tmp_path / "corpus"), *FAST, "--cache", str(tmp_path / "c"),
         "--model", str(tmp_path / "m.npz")],
        capture_output=True, text=True, timeout=240, env=environment())
    assert done.returncode == 0, done.stderr
    assert "3 text files" in done.stdout and "over 2 MPI processes" in done.stdout
    assert len(list((tmp_path / "c").glob("*.tokens"))) == 1      # built once, by rank 0
    assert crnn_io.load_checkpoint(str(tmp_path / "m.npz"))["epoch"] == 2


# ------------------------------------------------------------ the pieces

from crnn import distributed               # noqa: E402


def test_shares_are_contiguous_and_balanced_by_positions():
    assert distributed.split([10, 1, 1, 1, 1, 10], 2) == [0, 3, 6]
    assert distributed.split([5], 3) == [0, 0, 1, 1]           # empty shares are fine
    assert distributed.split([3, 3, 3, 3], 4) == [0, 1, 2, 3, 4]
    rng = np.random.default_rng(0)
    for _ in range(200):
        weights = rng.integers(1, 50, size=rng.integers(1, 40))
        parts = int(rng.integers(1, 6))
        bounds = distributed.split(weights, parts)
        assert bounds[0] == 0 and bounds[-1] == len(weights) and len(bounds) == parts + 1
        assert all(a <= b for a, b in zip(bounds, bounds[1:]))
        shares = [weights[a:b].sum() for a, b in zip(bounds, bounds[1:])]
        # no share is more than one sequence away from the ideal
        assert max(shares) <= weights.sum() / parts + weights.max()


def test_the_launcher_is_found_in_the_environment():
    assert distributed.launched_by_mpi({}) == 0
    assert distributed.launched_by_mpi({"PMI_RANK": "1", "PMI_SIZE": "4"}) == 4
    assert distributed.launched_by_mpi({"OMPI_COMM_WORLD_RANK": "0",
                                        "OMPI_COMM_WORLD_SIZE": "3"}) == 3
    assert distributed.launched_by_mpi({"PMIX_RANK": "0", "PMIX_SIZE": "2"}) == 2
    assert distributed.launched_by_mpi({"SLURM_PROCID": "0"}) == 0   # srun without MPI


def test_a_comm_that_is_not_one_is_refused():
    model = crnn.RNN(2, 3, 2, seed=0)

    class Half:
        rank, size = 0, 2

        def Allreduce(self, send, recv):
            pass

    with pytest.raises(TypeError, match="got Half, which has no Bcast"):
        crnn.Trainer(model, comm=Half())
    Half.Bcast = lambda self, buffer, root=0: None
    Half.rank = 2
    with pytest.raises(TypeError, match=r"0 <= rank < size, got rank=2, size=2"):
        crnn.Trainer(model, comm=Half())
