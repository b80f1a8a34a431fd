"""The ``crnn`` command end to end on a tiny text: train, sample, info, errors.

Most runs call ``crnn.cli.main(argv, out)`` in-process (fast); one subprocess
each proves that ``python -m crnn`` and the ``crnn`` console script work.
"""

import argparse
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import crnn
from crnn import cli
from crnn import io as crnn_io

# A learnable text: one sentence repeated (~3150 characters, 29 symbols).
SENTENCE = "the quick brown fox jumps over the lazy dog.\n"
TEXT = SENTENCE * 70
VOCABULARY = set(TEXT)

# The small, fast training settings of every train run here.
FAST = ["--hidden", "16", "--seq-length", "8", "--chunks", "2", "--batch-size", "4",
        "--max-chars", "3000", "--quiet"]

EPOCH_LINE = re.compile(r"^epoch (\d+): ([0-9.]+) bits/char on training text, "
                        r"([0-9.]+) on held-out text; saved (.+)$", re.M)


def run(capsys, argv):
    """``crnn ARGV`` in-process: (exit status, stdout, stderr).  Command
    output goes to the ``out`` argument; argparse's to sys.stdout/stderr."""
    out = io.StringIO()
    try:
        status = cli.main(argv, out=out)
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return status, out.getvalue() + captured.out, captured.err


def assert_user_error(status, err, command, *fragments):
    """Exit status 2, one clear ``crnn <command>: error:`` line, no traceback."""
    assert status == 2
    assert "Traceback" not in err
    assert f"crnn {command}: error:" in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def sample_after(output, marker):
    """The text printed after the line `marker` (the sample may hold newlines)."""
    head, found, rest = output.partition(marker + "\n")
    assert found, output
    assert rest.endswith("\n")
    return rest[:-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One `crnn train` run shared by the sample/info tests: (folder, model
    path, output, the (path, epoch) of every checkpoint written)."""
    folder = tmp_path_factory.mktemp("cli")
    textfile = folder / "text.txt"
    textfile.write_text(TEXT, encoding="utf-8")
    model = folder / "tmp" / "m.npz"
    model.parent.mkdir()
    saved = []
    original = crnn_io.save_checkpoint

    def recording(path, model_, optimizer_state=None, epoch=None, extra=None):
        saved.append((str(path), epoch, os.path.exists(path)))
        return original(path, model_, optimizer_state=optimizer_state,
                        epoch=epoch, extra=extra)

    cli.io.save_checkpoint = recording
    try:
        out = io.StringIO()
        status = cli.main(["train", str(textfile), "--epochs", "2", *FAST,
                           "--model", str(model), "--sample-length", "50"], out=out)
    finally:
        cli.io.save_checkpoint = original
    assert status == 0
    return folder, model, out.getvalue(), saved


# ------------------------------------------------------------------ train

def test_train_writes_a_checkpoint_each_epoch(trained):
    folder, model, output, saved = trained
    assert [(path, epoch) for path, epoch, _ in saved] == [(str(model), 1), (str(model), 2)]
    assert saved[1][2], "the second save should replace the first epoch's file"
    checkpoint = crnn_io.load_checkpoint(str(model))
    assert checkpoint["epoch"] == 2
    assert checkpoint["optimizer_state"] is not None
    assert set(checkpoint["extra"]["vocabulary"]) == VOCABULARY
    assert len(checkpoint["extra"]["bits_per_char"]["held_out"]) == 2
    assert isinstance(checkpoint["model"], crnn.LSTM)
    assert checkpoint["model"].input_size == len(VOCABULARY)
    # no temporary files left beside the checkpoint
    assert os.listdir(model.parent) == ["m.npz"]


def test_train_reports_bits_per_char_each_epoch(trained):
    _, model, output, _ = trained
    epochs = EPOCH_LINE.findall(output)
    assert [int(e[0]) for e in epochs] == [1, 2]
    for _, train, held_out, path in epochs:
        assert 0 < float(train) < 8 and 0 < float(held_out) < 8
        assert path == str(model)
    # the reported numbers are the ones stored in the checkpoint
    stored = crnn_io.load_checkpoint(str(model))["extra"]["bits_per_char"]
    assert [f"{b:.3f}" for b in stored["held_out"]] == [e[2] for e in epochs]
    assert "29 symbols" in output and "held out" in output


def test_train_prints_a_sample_of_the_requested_length(trained):
    _, _, output, _ = trained
    sample = sample_after(output, "a sample (temperature 0.7):")
    assert len(sample) == 1 + 50          # the one-character prime, then 50
    assert sample[0] == TEXT[0]
    assert set(sample) <= VOCABULARY


def test_bits_per_char_fall_on_a_learnable_text(tmp_path, capsys):
    textfile = tmp_path / "text.txt"
    textfile.write_text(TEXT, encoding="utf-8")
    status, output, err = run(capsys, ["train", str(textfile), "--epochs", "6", *FAST,
                                       "--model", str(tmp_path / "m.npz"),
                                       "--sample-length", "0"])
    assert status == 0, err
    epochs = EPOCH_LINE.findall(output)
    assert len(epochs) == 6
    train = [float(e[1]) for e in epochs]
    held_out = [float(e[2]) for e in epochs]
    assert all(b < a for a, b in zip(train, train[1:])), train
    assert all(b < a for a, b in zip(held_out, held_out[1:])), held_out
    assert held_out[-1] < 0.5 * held_out[0]
    assert "a sample" not in output      # --sample-length 0: none


def test_train_with_dropout_and_resume_with_another(tmp_path, capsys):
    """--dropout: between layers and before the output layer, kept in the
    checkpoint; a run resumes with another --dropout (a training setting)."""
    textfile = tmp_path / "text.txt"
    textfile.write_text(TEXT, encoding="utf-8")
    model = tmp_path / "m.npz"
    common = ["train", str(textfile), *FAST, "--layers", "2", "--model", str(model),
              "--sample-length", "0"]
    status, output, err = run(capsys, common + ["--epochs", "1", "--dropout", "0.3"])
    assert status == 0, err
    saved = crnn_io.load_checkpoint(model)["model"]
    assert (saved.dropout, saved.output_dropout, saved.dropout_first_layer) == (
        0.3, 0.3, False)
    plain = tmp_path / "plain.npz"
    status, _, err = run(capsys, common[:-4] + ["--model", str(plain), "--sample-length",
                                                "0", "--epochs", "1", "--dropout", "0"])
    assert status == 0, err
    assert not np.array_equal(crnn_io.load_checkpoint(plain)["model"].params["W1"],
                              saved.params["W1"])        # dropout acted
    status, output, err = run(capsys, common + ["--epochs", "2", "--dropout", "0.1",
                                                "--resume", str(model)])
    assert status == 0, err
    assert "resuming" in output and len(EPOCH_LINE.findall(output)) == 1
    assert crnn_io.load_checkpoint(model)["model"].dropout == 0.1
    assert crnn_io.load_checkpoint(plain)["model"].dropout == 0.0
    assert cli.build_parser().parse_args(["train"]).dropout == 0.4   # the default


def test_train_on_the_default_corpus(tmp_path, capsys):
    status, output, err = run(capsys, ["train", "--epochs", "1", *FAST,
                                       "--model", str(tmp_path / "m.npz"),
                                       "--sample-length", "20"])
    assert status == 0, err
    assert "standard library" in output
    assert len(EPOCH_LINE.findall(output)) == 1
    assert (tmp_path / "m.npz").exists()


def test_standard_library_text():
    for max_chars in (1, 100, 5000):
        text = cli.standard_library_text(max_chars)
        assert isinstance(text, str)
        assert 0 < len(text) <= max_chars
    text = cli.standard_library_text(20_000)
    assert len(text) == 20_000          # the standard library has far more
    assert "def " in text or "import " in text
    assert text == cli.standard_library_text(20_000)     # a fixed order


# ------------------------------------------------------------------ sample / info

def test_sample_is_reproducible_and_uses_the_prime(trained, capsys):
    _, model, _, _ = trained
    argv = ["sample", str(model), "-n", "100", "--seed", "1", "--prime", "the "]
    status, first, err = run(capsys, argv)
    assert status == 0, err
    status, second, _ = run(capsys, argv)
    assert first == second
    sample = first[:-1]
    assert sample.startswith("the ")
    assert len(sample) == 4 + 100
    assert set(sample) <= VOCABULARY
    status, other, _ = run(capsys, argv[:-4] + ["--seed", "2", "--prime", "the "])
    assert status == 0 and other != first
    status, primed, _ = run(capsys, argv[:-2] + ["--prime", "lazy "])
    assert status == 0 and primed.startswith("lazy ") and len(primed[:-1]) == 105


def test_sample_defaults(trained, capsys):
    _, model, _, _ = trained
    status, output, err = run(capsys, ["sample", str(model), "--seed", "0"])
    assert status == 0, err
    sample = output[:-1]
    # The default prime is a newline (the start of a line), read but not
    # printed: 500 generated characters and nothing else.
    assert len(sample) == 500
    assert set(sample) <= VOCABULARY
    status, primed, _ = run(capsys, ["sample", str(model), "--seed", "0",
                                     "--prime", "\n"])
    assert primed == "\n" + output         # the same draw, with the prime shown


def test_info_describes_the_model(trained, capsys):
    _, model, _, _ = trained
    status, output, err = run(capsys, ["info", str(model)])
    assert status == 0, err
    assert output.startswith(f"{model}: LSTM(29, 16, 29")
    assert "parameters:" in output
    count = sum(p.size for p in crnn.load(str(model)).params.values())
    assert count == 4 * 16 * (29 + 16 + 1) + 29 * (16 + 1)
    assert f"parameters: {count:,}" in output
    assert "trained epochs: 2" in output
    assert "vocabulary: 29 characters" in output
    assert "bits/char by epoch" in output


def test_info_on_a_plain_model_file(tmp_path, capsys):
    path = tmp_path / "plain.npz"
    crnn.GRU(3, 5, 2, seed=0).save(str(path))
    status, output, err = run(capsys, ["info", str(path)])
    assert status == 0, err
    assert "GRU(3, 5, 2" in output and "vocabulary" not in output
    status, _, err = run(capsys, ["sample", str(path)])
    assert_user_error(status, err, "sample", "without a vocabulary")


# ------------------------------------------------------------------ errors

def bad_text_files(folder):
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.txt").write_bytes(b"some text\0\1\2 and more")
    (folder / "latin1.txt").write_bytes("caf\xe9 au lait ".encode("latin-1") * 20)
    (folder / "a-folder").mkdir()
    (folder / "one-symbol.txt").write_text("a" * 500)
    (folder / "short.txt").write_text("abcabc")
    return {
        "missing.txt": "no such file",
        "empty.txt": "empty",
        "binary.txt": "binary",
        "latin1.txt": "not UTF-8",
        "a-folder": "folder",
        "one-symbol.txt": "two different characters",
        "short.txt": "too little text",
    }


def test_train_refuses_what_is_not_usable_text(tmp_path, capsys):
    for name, fragment in bad_text_files(tmp_path).items():
        model = tmp_path / "m.npz"
        status, output, err = run(capsys, ["train", str(tmp_path / name), *FAST,
                                           "--model", str(model)])
        assert_user_error(status, err, "train", name, fragment)
        assert not model.exists()


def test_train_refuses_an_unwritable_model_path_before_training(tmp_path, capsys):
    textfile = tmp_path / "text.txt"
    textfile.write_text(TEXT)
    (tmp_path / "a-folder").mkdir()
    for target, fragment in (("no-such-folder/m.npz", "no such folder"),
                             ("a-folder", "is a folder")):
        status, output, err = run(capsys, ["train", str(textfile), *FAST,
                                           "--model", str(tmp_path / target)])
        assert_user_error(status, err, "train", fragment)
        assert "epoch" not in output


def test_train_reports_divergence(tmp_path, capsys, monkeypatch):
    from crnn.trainer import NonFiniteError

    def diverge(self, *args, **kwargs):
        raise NonFiniteError("the loss is nan at epoch 1 of 1, batch 3 of 9",
                             0, 2, None)

    monkeypatch.setattr(crnn.Trainer, "fit", diverge)
    textfile = tmp_path / "text.txt"
    textfile.write_text(TEXT)
    status, _, err = run(capsys, ["train", str(textfile), *FAST,
                                  "--model", str(tmp_path / "m.npz")])
    assert_user_error(status, err, "train", "diverged", "--lr")


def not_models(folder):
    (folder / "random.npz").write_bytes(np.random.default_rng(0).bytes(3000))
    np.savez(folder / "other.npz", weights=np.arange(10.0))
    (folder / "a-folder").mkdir()
    (folder / "text.npz").write_text("not a model")
    checkpoint = folder / "wrong-vocabulary.npz"
    crnn_io.save_checkpoint(str(checkpoint), crnn.LSTM(5, 4, 5, seed=0),
                            extra={"vocabulary": "abc"})
    return {
        "missing.npz": "no such file",
        "random.npz": "not an .npz archive",
        "other.npz": "not a crnn file",
        "a-folder": "folder",
        "text.npz": "cannot load",
        "wrong-vocabulary.npz": "vocabulary does not fit",
    }


@pytest.mark.parametrize("command", ["sample", "info"])
def test_a_model_file_that_is_not_one(tmp_path, capsys, command):
    for name, fragment in not_models(tmp_path).items():
        status, output, err = run(capsys, [command, str(tmp_path / name)])
        assert_user_error(status, err, command, name, fragment)
        assert output == ""


def test_sample_refuses_a_prime_outside_the_vocabulary(trained, capsys):
    _, model, _, _ = trained
    status, output, err = run(capsys, ["sample", str(model), "--prime", "THE fox"])
    assert_user_error(status, err, "sample", "not in the model's vocabulary",
                      "'E'", "'H'", "'T'")
    assert output == ""


@pytest.mark.parametrize("argv", [
    ["train", "--epochs", "-1"],
    ["train", "--epochs", "0"],
    ["train", "--epochs", "two"],
    ["train", "--hidden", "0"],
    ["train", "--seq-length", "-8"],
    ["train", "--lr", "nan"],
    ["train", "--lr", "-0.1"],
    ["train", "--validation", "1.5"],
    ["train", "--sample-length", "-1"],
    ["train", "--seed", "-1"],
    ["train", "--temperature", "inf"],
    ["train", "--dropout", "1"],
    ["train", "--dropout", "-0.1"],
    ["train", "--no-such-option"],
    ["sample", "m.npz", "-n", "0"],
    ["sample", "m.npz", "--temperature", "0"],
    ["sample", "m.npz", "--seed", "-3"],
    ["sample"],
    ["info"],
    ["frobnicate"],
])
def test_bad_option_values(tmp_path, capsys, monkeypatch, argv):
    # Should a bad value slip through, train quickly and write into tmp_path
    # (the bad option comes last, so it overrides these).
    monkeypatch.chdir(tmp_path)
    if argv[:1] == ["train"] and len(argv) > 1:
        argv = ["train", *FAST, "--epochs", "1", "--sample-length", "5",
                "--model", "m.npz"] + argv[1:]
    status, output, err = run(capsys, argv)
    assert status == 2
    assert "Traceback" not in err
    assert "error:" in err and "usage: crnn" in err


def subcommand_parsers():
    parser = cli.build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return parser, actions[0].choices


def test_help_on_each_subcommand_mentions_every_option(capsys):
    parser, commands = subcommand_parsers()
    assert set(commands) == {"train", "sample", "info"}
    for name, subparser in commands.items():
        status, output, err = run(capsys, [name, "--help"])
        assert status == 0
        for action in subparser._actions:
            assert action.help and action.help != argparse.SUPPRESS, action
            names = action.option_strings or [action.metavar or action.dest]
            for option in names:
                assert option in output, (name, option)
            # the help text itself is shown (argparse may wrap it)
            assert " ".join(action.help.split()[:2]) in " ".join(output.split())
    status, output, _ = run(capsys, ["--help"])
    assert status == 0
    assert all(name in output for name in commands)
    status, output, _ = run(capsys, [])
    assert status == 0 and "train" in output


def test_a_reader_that_goes_away(trained):
    _, model, _, _ = trained

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    assert cli.main(["sample", str(model), "-n", "10"], out=ClosedPipe()) == 1


# ------------------------------------------------------------------ entry points

def test_python_dash_m_crnn():
    result = subprocess.run([sys.executable, "-m", "crnn", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: crnn" in result.stdout
    for name in ("train", "sample", "info"):
        assert name in result.stdout


def test_console_script(trained):
    _, model, _, _ = trained
    script = None
    for folder in (os.path.dirname(sys.executable), sysconfig.get_path("scripts")):
        for name in ("crnn", "crnn.exe"):
            if os.path.isfile(os.path.join(folder, name)):
                script = os.path.join(folder, name)
                break
        if script:
            break
    script = script or shutil.which("crnn")
    assert script, "the crnn console script is not installed beside this Python"
    result = subprocess.run([script, "info", str(model)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "LSTM(29, 16, 29" in result.stdout and "trained epochs: 2" in result.stdout
    result = subprocess.run([script, "info", str(model.parent / "missing.npz")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "crnn info: error:" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------ issue 23: each item in a real process

def crnn_process(argv, cwd, **kwargs):
    """``python -m crnn ARGV`` in `cwd`: the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "crnn", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture
def text_folder(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path


def test_train_never_writes_over_a_model_it_did_not_create(text_folder):
    earlier = text_folder / cli.DEFAULT_MODEL
    old = np.random.default_rng(0).bytes(5000)          # an earlier run's file
    earlier.write_bytes(old)
    for argv in (["train", "text.txt"],                 # the default --model
                 ["train", "text.txt", "--model", cli.DEFAULT_MODEL]):
        result = crnn_process([*argv, *FAST, "--epochs", "1"], text_folder)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        for fragment in (cli.DEFAULT_MODEL, "--force", "--model PATH"):
            assert fragment in result.stderr, (fragment, result.stderr)
        assert "epoch 1" not in result.stdout          # refused before training
        assert earlier.read_bytes() == old
    # --model PATH elsewhere trains and leaves the earlier file alone
    result = crnn_process(["train", "text.txt", *FAST, "--epochs", "1",
                           "--sample-length", "0", "--model", "other.npz"], text_folder)
    assert result.returncode == 0, result.stderr
    assert earlier.read_bytes() == old
    assert crnn_io.load_checkpoint(str(text_folder / "other.npz"))["epoch"] == 1
    # --force replaces it
    result = crnn_process(["train", "text.txt", *FAST, "--epochs", "1",
                           "--sample-length", "0", "--force"], text_folder)
    assert result.returncode == 0, result.stderr
    assert crnn_io.load_checkpoint(str(earlier))["epoch"] == 1


@pytest.mark.skipif(sys.platform == "win32",
                    reason="Windows cannot send SIGINT to one child process")
def test_ctrl_c_saves_the_weights_reached_and_exits_130(text_folder):
    # Enough text that an epoch takes a while: the SIGINT lands inside one.
    (text_folder / "long.txt").write_text(TEXT * 8, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "crnn", "train", "long.txt", *FAST, "--max-chars",
         "30000", "--epochs", "1000", "--model", "m.npz"],
        cwd=text_folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job (`cmd &`) runs with SIGINT ignored, and
        # the child would inherit that: give it the default disposition,
        # under which Python raises KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = []
        while not any(line.startswith("epoch 1:") for line in lines):
            line = process.stdout.readline()
            assert line, (lines, process.stderr.read())
            lines.append(line)
        first_epoch = crnn_io.load_checkpoint(str(text_folder / "m.npz"))
        steps_per_epoch = first_epoch["optimizer_state"]["step"]
        process.send_signal(signal.SIGINT)
        output, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, (output, err)
    assert "Traceback" not in err
    reported = re.search(r"interrupted after (\d+) update\(s\) \((\d+) complete "
                         r"epoch\(s\)\); saved the weights reached in m\.npz", output)
    assert reported, output
    updates, epochs = int(reported[1]), int(reported[2])
    assert "a sample" not in output
    checkpoint = crnn_io.load_checkpoint(str(text_folder / "m.npz"))
    # The file holds the run's last weights: the optimizer state saved with
    # them has taken every update the run made, partial epoch included.
    assert checkpoint["optimizer_state"]["step"] == updates
    assert updates >= epochs * steps_per_epoch >= steps_per_epoch
    assert checkpoint["epoch"] == epochs
    assert checkpoint["extra"]["interrupted"] is True
    assert len(checkpoint["extra"]["bits_per_char"]["train"]) == epochs
    assert [name for name in os.listdir(text_folder) if name.endswith(".tmp")] == []


def test_every_loss_shown_is_in_bits_per_char(text_folder):
    pty = pytest.importorskip("pty")
    # stderr a terminal: the progress line is shown, in bits/char
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "crnn", "train", "text.txt",
             *[a for a in FAST if a != "--quiet"], "--epochs", "2",
             "--sample-length", "0", "--model", "m.npz"],
            cwd=text_folder, stdout=subprocess.PIPE, stderr=slave, text=True)
        os.close(slave)
        output, _ = process.communicate(timeout=300)
        progress = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:        # the terminal's other end is closed
                break
            if not chunk:
                break
            progress += chunk
    finally:
        os.close(master)
    assert process.returncode == 0, progress
    progress = progress.decode()
    assert re.search(r"epoch 1/2: step \d+/\d+, [0-9.]+ bits/char", progress), progress
    assert "loss" not in progress and "nats" not in progress
    assert len(EPOCH_LINE.findall(output)) == 2
    assert "loss" not in output
    # stderr not a terminal: nothing there at all
    result = crnn_process(["train", "text.txt", *[a for a in FAST if a != "--quiet"],
                           "--epochs", "1", "--sample-length", "0", "--model", "n.npz"],
                          text_folder)
    assert result.returncode == 0 and result.stderr == ""


@pytest.mark.parametrize("option, value, expected", [
    ("--hidden", "abc", "expected an integer >= 1, got 'abc'"),
    ("--epochs", "2.5", "expected an integer >= 1, got '2.5'"),
    ("--hidden", "0", "expected an integer >= 1, got 0"),
    ("--seed", "x", "expected an integer >= 0, got 'x'"),
    ("--lr", "fast", "expected a number > 0, got 'fast'"),
    ("--validation", "half", "expected a fraction in (0, 1), got 'half'"),
    ("--dropout", "1.5", "expected a probability in [0, 1), got 1.5"),
])
def test_argument_errors_say_what_was_expected(text_folder, option, value, expected):
    result = crnn_process(["train", "text.txt", option, value], text_folder)
    assert result.returncode == 2
    assert f"argument {option}: {expected}" in result.stderr, result.stderr
    for internal in ("invalid", "positive_int", "non_negative_int",
                     "positive_float", "fraction value", "Traceback"):
        assert internal not in result.stderr
    assert not (text_folder / cli.DEFAULT_MODEL).exists()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_file_is_named_as_such(text_folder, encoding):
    data = TEXT.encode(encoding)
    if not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        data = "\ufeff".encode(encoding) + data           # a byte-order mark
    (text_folder / "wide.txt").write_bytes(data)
    result = crnn_process(["train", "wide.txt", *FAST, "--model", "m.npz"], text_folder)
    assert result.returncode == 2
    assert "wide.txt" in result.stderr and "UTF-16" in result.stderr, result.stderr
    assert "binary" not in result.stderr
    # without a byte-order mark it is still refused, as binary (NUL bytes)
    (text_folder / "bare.txt").write_bytes(TEXT.encode("utf-16-le"))
    result = crnn_process(["train", "bare.txt", *FAST, "--model", "m.npz"], text_folder)
    assert result.returncode == 2 and "NUL" in result.stderr


def test_sample_output_starts_with_the_text(trained):
    folder, model, _, _ = trained
    result = crnn_process(["sample", str(model), "-n", "80", "--seed", "4"], folder)
    assert result.returncode == 0, result.stderr
    sample = result.stdout[:-1]
    assert len(sample) == 80
    assert set(sample) <= VOCABULARY
    help_text = crnn_process(["sample", "--help"], folder).stdout
    assert "start of a line" in " ".join(help_text.split())


def test_short_runs_report_their_time_with_precision(text_folder):
    result = crnn_process(["train", "text.txt", *FAST, "--epochs", "1",
                           "--sample-length", "0", "--model", "m.npz"], text_folder)
    assert result.returncode == 0, result.stderr
    took = re.search(r"trained 1 epoch\(s\) in ([0-9.]+) s", result.stdout)
    assert took, result.stdout
    seconds = float(took[1])
    assert seconds > 0                       # not rounded away to "0 s"
    assert len(took[1].replace(".", "").lstrip("0")) >= 2   # two significant digits


def test_duration_format():
    assert cli.duration(0.0123) == "0.012 s"
    assert cli.duration(3.456) == "3.46 s"
    assert cli.duration(42.0) == "42.0 s"
    assert cli.duration(1234.4) == "1234 s"


def test_bare_crnn_prints_help_and_succeeds(tmp_path):
    result = crnn_process([], tmp_path)
    assert result.returncode == 0
    assert "usage: crnn" in result.stdout
    for name in ("train", "sample", "info"):
        assert name in result.stdout
    assert result.stderr == ""
