"""The ``crnn`` command: train a character-level LSTM, sample from it, describe it.

    crnn train [TEXTFILE]   train on a text file (default: the source of
                            Python's own standard library, on every machine)
    crnn sample MODEL       generate text from a trained model
    crnn info MODEL         describe a saved model or checkpoint

A model file written by ``crnn train`` is a crnn checkpoint (crnn.io): the
model, the optimizer's state, the epoch and, in ``extra``, the vocabulary,
the per-epoch bits per character and the trainer's state, so that
``crnn train --resume MODEL`` continues it.  ``crnn.load(path)`` reads its
model.

``crnn train`` never writes over a file it did not create: an existing
``--model`` file is refused unless ``--force`` is given (or it is the
``--resume`` file, which the run continues).  Ctrl-C saves the weights the
run has reached and exits with status 130.  Every loss it shows is in bits
per character.  Exit status: 0 done, 2 a usage or input error, 130
interrupted.

Under an MPI launcher (``mpiexec -n 4 crnn train ...``, ``srun``) the
command finds the launcher's variables in its environment and trains
data-parallel over ``mpi4py``'s COMM_WORLD with the same flags; only rank 0
prints and writes files (docs/distributed.md).
"""
import argparse
import math
import os
import sys
import sysconfig
import time

import numpy as np

from . import LSTM, Trainer, __version__, corpus, distributed, io
from .trainer import NonFiniteError

DEFAULT_MODEL = "crnn-char-lstm.npz"
INTERRUPTED = 130          # what a shell expects of a command ended by Ctrl-C
UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")    # UTF-16 byte-order marks (LE, BE)


class CommandError(Exception):
    """A user error: printed as ``crnn <command>: error: ...``, exit status 2."""


# ------------------------------------------------------------------ corpus

def read_text(path):
    """The text of `path`, refusing what is not text."""
    if not os.path.exists(path):
        raise CommandError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CommandError(f"{path}: is a folder, expected a text file")
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise CommandError(f"{path}: cannot read it ({error.strerror})") from None
    if not raw:
        raise CommandError(f"{path}: the file is empty, expected text to train on")
    if raw.startswith(UTF16_MARKS):
        raise CommandError(f"{path}: is UTF-16 text (it starts with a UTF-16 "
                           f"byte-order mark), expected UTF-8; convert it, "
                           f"e.g. iconv -f UTF-16 -t UTF-8")
    if b"\0" in raw:
        raise CommandError(f"{path}: looks like a binary file (it holds NUL "
                           f"bytes), expected UTF-8 text")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CommandError(f"{path}: is not UTF-8 text ({error.reason} at byte "
                           f"{error.start})") from None


def standard_library_text(max_chars):
    """Source files of Python's standard library, in a fixed order, up to
    `max_chars` characters: a corpus every machine has."""
    root = sysconfig.get_paths()["stdlib"]
    parts, total = [], 0
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders
                               if d not in ("test", "tests", "site-packages",
                                            "idle_test", "__pycache__"))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    text = handle.read()
            except (OSError, UnicodeDecodeError):
                continue
            parts.append(text)
            total += len(text)
            if total >= max_chars:
                return "".join(parts)[:max_chars]
    if not parts:
        raise CommandError(f"found no Python sources under {root}; pass a TEXTFILE")
    return "".join(parts)[:max_chars]


def encode(text, vocabulary):
    index = {ch: i for i, ch in enumerate(vocabulary)}
    unknown = sorted(set(text) - set(index))
    if unknown:
        raise CommandError(f"characters not in the model's vocabulary: {unknown[:10]!r}")
    return np.fromiter((index[ch] for ch in text), dtype=np.int64, count=len(text))


def as_rows(ids, row_length):
    """Inputs and next-character targets, in rows of `row_length` steps."""
    rows = (len(ids) - 1) // row_length
    X = ids[:rows * row_length].reshape(rows, row_length)
    y = ids[1:rows * row_length + 1].reshape(rows, row_length)
    return X, y


# ------------------------------------------------------------------ train

def bits(nats):
    """A loss in nats per character as bits per character."""
    return nats / math.log(2)


class EpochReport:
    """Trainer callback: bits per character after every epoch, and a
    checkpoint (model, optimizer state, epoch, vocabulary, the trainer's
    state) each epoch.  Under MPI only rank 0 writes and prints.

    With `progress` (a terminal), a line on stderr during each epoch shows
    the steps done and the running training loss, in bits per character
    like everything else the command prints."""

    def __init__(self, trainer, path, vocabulary, out, bits=None, epochs=None,
                 steps_per_epoch=None, progress=None):
        self.trainer = trainer
        self.path = path
        self.vocabulary = vocabulary
        self.out = out
        self.bits = bits or {"train": [], "held_out": []}
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.progress = progress
        self.epoch = 0
        self.loss_sum = self.positions = 0.0

    def save(self, epoch=None):
        """Rank 0 writes the checkpoint: at the end of an epoch (`epoch`
        None) the trainer's, which --resume continues; else, after Ctrl-C,
        the model as it is now with `epoch` epochs done."""
        if self.trainer.rank != 0:
            return
        extra = {"vocabulary": "".join(self.vocabulary),
                 "bits_per_char": {k: list(v) for k, v in self.bits.items()}}
        try:
            if epoch is None:
                self.trainer.save_checkpoint(self.path, extra=extra)
            else:
                extra["interrupted"] = True
                io.save_checkpoint(
                    self.path, self.trainer.model,
                    optimizer_state=self.trainer.optimizer.state_dict(),
                    epoch=epoch, extra=extra)
        except OSError as error:
            raise CommandError(f"cannot save {self.path} ({error.strerror or error})") from None

    def on_epoch_begin(self, epoch, logs):
        self.epoch = epoch
        self.loss_sum = self.positions = 0.0

    def on_batch_end(self, batch, logs):
        if self.progress is None:
            return
        self.loss_sum += logs["loss"] * logs["positions"]
        self.positions += logs["positions"]
        print(f"\repoch {self.epoch + 1}/{self.epochs}: step {batch + 1}/"
              f"{self.steps_per_epoch}, {bits(self.loss_sum / self.positions):.3f} "
              f"bits/char", end="", file=self.progress, flush=True)

    def clear_progress(self):
        if self.progress is not None and self.positions:
            print("\r\033[K", end="", file=self.progress, flush=True)

    def on_epoch_end(self, epoch, logs):
        self.clear_progress()
        train = bits(logs["loss"])
        held_out = bits(logs.get("val_loss", float("nan")))
        self.bits["train"].append(train)
        self.bits["held_out"].append(held_out)
        self.save()
        self.positions = 0.0
        print(f"epoch {epoch + 1}: {train:.3f} bits/char on training text, "
              f"{held_out:.3f} on held-out text; saved {self.path}", file=self.out,
              flush=True)


def check_destination(path, force=False):
    """Refuse a --model path that cannot be written, or that holds a file
    this run did not create (unless `force`), before training starts."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CommandError(f"--model {path}: is a folder, expected a file name to write")
    if not os.path.isdir(folder):
        raise CommandError(f"--model {path}: no such folder {folder}")
    if os.path.lexists(path) and not force:
        raise CommandError(
            f"{path} already exists and this run would write over it; pass "
            f"--force to replace it, or --model PATH to save elsewhere")


def duration(seconds):
    """Seconds with a precision that suits them: 0.042 s, 3.5 s, 75 s."""
    if seconds < 1:
        return f"{seconds:.3f} s"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 100:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s"


def mpi_world():
    """mpi4py's COMM_WORLD when an MPI launcher started this process, else
    None; a launcher of several processes without mpi4py is an error."""
    size = distributed.launched_by_mpi()
    if not size:
        return None
    try:
        return distributed.world()
    except ImportError as error:
        if size > 1:
            raise CommandError(f"started by an MPI launcher as one of {size} "
                               f"processes, but {error}") from None
        return None


def command_train(args, out):
    comm = mpi_world()
    team = distributed.Team(comm) if comm is not None else None
    rank = 0 if team is None else team.rank
    if rank != 0:
        out = open(os.devnull, "w")     # only rank 0 speaks
    # Every rank prepares the same run from the same inputs; under MPI one
    # collective then shares any error, so no rank waits for another that
    # has already given up.
    if team is not None and team.size > 1:
        # rank 0 builds the token cache of a corpus; the others then open it
        error = None
        if rank == 0:
            try:
                corpus_ids(args)
            except Exception as caught:
                error = caught
        failed = team.allreduce(np.array([error is not None], dtype=np.float64))
        if failed[0]:
            team.raise_agreed(error, int(failed[0]))
    prepared, error = None, None
    try:
        prepared = prepare_training(args, out)
    except Exception as caught:
        if team is None:
            raise
        error = caught
    if team is not None:
        failed = team.allreduce(np.array([error is not None], dtype=np.float64))
        if failed[0]:
            team.raise_agreed(error, int(failed[0]))
    prime, source, vocabulary, ids, held_out, X, y, Xv, yv, model, bits, start = prepared

    trainer = Trainer(model, optimizer="adam", lr=args.lr,
                      batch_size=args.batch_size, clip_norm=5.0, seed=args.seed,
                      comm=comm)
    steps_per_epoch = -(-len(X) // args.batch_size) * -(-X.shape[1] // args.seq_length)
    progress = None if args.quiet or rank != 0 or not sys.stderr.isatty() else sys.stderr
    report = EpochReport(trainer, args.model, vocabulary, out, bits, args.epochs,
                         steps_per_epoch, progress)
    ranks = "" if team is None else f"; data-parallel over {team.size} MPI processes"
    print(f"crnn {__version__}: a character-level LSTM ({model.num_layers} x "
          f"{model.hidden_size} units, {len(vocabulary)} symbols) on {source}: "
          f"{len(ids) - held_out:,} characters to train on, {held_out:,} held "
          f"out; truncated BPTT every {args.seq_length} steps{ranks}", file=out,
          flush=True)
    if args.resume:
        print(f"resuming {args.resume} after epoch {start} of {args.epochs}",
              file=out, flush=True)
    started = time.perf_counter()
    try:
        # verbose=0: the trainer's own lines show the loss in nats; the
        # report shows progress in bits per character, as the rest.
        history = trainer.fit(X, y, epochs=args.epochs, validation_data=(Xv, yv),
                              callbacks=[report], verbose=0,
                              bptt=args.seq_length, resume_from=args.resume)
    except NonFiniteError as error:
        raise CommandError(f"training diverged: {error}; try a smaller --lr") from None
    except ValueError as error:
        if args.resume and "resume_from" in str(error):
            raise CommandError(str(error)) from None
        raise
    if history.interrupted:
        # The checkpoint of the last epoch is behind the weights in memory:
        # save those, then stop as an interrupted command does.
        report.clear_progress()
        report.save(len(history.epoch))
        print(f"interrupted after {trainer.optimizer.steps} update(s) "
              f"({len(history.epoch)} complete epoch(s)); saved the weights "
              f"reached in {args.model}", file=out, flush=True)
        return INTERRUPTED
    print(f"trained {len(history.epoch) - start} epoch(s) in "
          f"{duration(time.perf_counter() - started)}", file=out)
    if args.sample_length and rank == 0:
        tokens = model.sample(args.sample_length, prime=encode(prime, vocabulary),
                              temperature=args.temperature, seed=args.seed)
        print(f"a sample (temperature {args.temperature}):", file=out)
        print(prime + "".join(vocabulary[t] for t in tokens), file=out)
    return 0


def prepare_training(args, out):
    """The text, vocabulary, training rows and model of a `crnn train` run
    (from --resume's checkpoint when given); CommandError on bad input."""
    if args.model is None:
        args.model = args.resume or DEFAULT_MODEL
    # the --resume file is the run's own: it continues there
    check_destination(args.model, args.force or (
        args.resume is not None
        and os.path.abspath(args.model) == os.path.abspath(args.resume)))
    limit = args.max_chars or None
    cached = corpus_ids(args)
    if cached is not None:
        ids, vocabulary, source = cached
        prime = vocabulary[int(ids[0])]
        symbols = set(vocabulary)
    else:
        if not args.textfile:
            text = standard_library_text(limit or sys.maxsize)
            source = "the Python standard library's source"
        else:
            text = read_text(args.textfile[0])[:limit]
            source = args.textfile[0]
        vocabulary = sorted(set(text))
        prime = text[:1]
        symbols = set(text)
    bits, start, resumed = None, 0, None
    if args.resume:
        checkpoint, saved_vocabulary = load_char_model(args.resume)
        if saved_vocabulary is None or checkpoint["epoch"] is None:
            raise CommandError(f"--resume {args.resume}: not a checkpoint written "
                               f"by crnn train")
        extra_chars = sorted(symbols - set(saved_vocabulary))
        if extra_chars:
            raise CommandError(
                f"--resume {args.resume}: the text has characters that are not in "
                f"the checkpoint's vocabulary: {extra_chars[:10]!r}")
        if cached is not None and list(saved_vocabulary) != vocabulary:
            raise CommandError(
                f"--resume {args.resume}: the corpus's vocabulary "
                f"({len(vocabulary)} symbols) is not the checkpoint's "
                f"({len(saved_vocabulary)}); resume on the same corpus")
        vocabulary = list(saved_vocabulary)
        resumed = checkpoint["model"]
        start = checkpoint["epoch"]
        saved_bits = checkpoint["extra"].get("bits_per_char")
        if isinstance(saved_bits, dict):
            bits = {key: list(saved_bits.get(key, [])) for key in ("train", "held_out")}
    if len(vocabulary) < 2:
        raise CommandError(f"{source}: the text needs at least two different "
                           f"characters, it has {len(vocabulary)}")
    if cached is None:
        ids = encode(text, vocabulary)
    held_out = max(int(len(ids) * args.validation), args.seq_length + 1)
    if len(ids) - held_out < 2 * (args.seq_length + 1):
        raise CommandError(
            f"{source}: {len(ids)} characters is too little text for "
            f"--seq-length {args.seq_length} with a held-out part; give more "
            f"text or a smaller --seq-length")
    row_length = args.seq_length * args.chunks
    X, y = as_rows(ids[:-held_out], min(row_length, len(ids) - held_out - 1))
    Xv, yv = as_rows(ids[-held_out:], args.seq_length)
    # --dropout: on the inputs of layers 2 and up and on the top layer's h
    # before the output layer, not on the characters (Zaremba et al.'s
    # non-recurrent connections)
    dropout = dict(dropout=args.dropout, dropout_first_layer=False,
                   output_dropout=args.dropout)
    if resumed is not None:
        model = LSTM(len(vocabulary), resumed.hidden_size, len(vocabulary),
                     num_layers=resumed.num_layers, seed=args.seed, **dropout)
    else:
        model = LSTM(len(vocabulary), args.hidden, len(vocabulary),
                     num_layers=args.layers, seed=args.seed, **dropout)
    return prime, source, vocabulary, ids, held_out, X, y, Xv, yv, model, bits, start


def default_cache():
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".cache")
    return os.path.join(root, "crnn", "tokens")


def corpus_ids(args):
    """For several text files or a folder: (token ids as a read-only
    np.memmap, vocabulary, description), from the token cache (built on
    first use); None for a single file or the default corpus."""
    paths = args.textfile
    if not paths or (len(paths) == 1 and not os.path.isdir(paths[0])):
        return None
    try:
        ids, vocabulary, files = corpus.token_cache(paths, args.cache or default_cache(),
                                                    args.max_chars or None)
    except corpus.CorpusError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"{error.filename or ''}: cannot read or cache it "
                           f"({error.strerror or error})") from None
    return ids, vocabulary, f"{len(files)} text files ({', '.join(paths)})"


# ------------------------------------------------------------------ sample / info

def load_char_model(path):
    """The checkpoint in `path` and its vocabulary (None when it has none)."""
    if not os.path.exists(path):
        raise CommandError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CommandError(f"{path}: is a folder, expected a model file")
    try:
        checkpoint = io.load_checkpoint(path)
    except ValueError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"{path}: cannot read it ({error.strerror or error})") from None
    extra = checkpoint["extra"] if isinstance(checkpoint["extra"], dict) else {}
    vocabulary = extra.get("vocabulary")
    model = checkpoint["model"]
    if vocabulary is not None and not (
            isinstance(vocabulary, str) and len(set(vocabulary)) == len(vocabulary)
            == model.input_size == model.output_size and model.output == "softmax"):
        raise CommandError(f"{path}: its vocabulary does not fit its model "
                           f"({model!r}); it was not written by crnn train")
    return checkpoint, vocabulary


def command_sample(args, out):
    checkpoint, vocabulary = load_char_model(args.model)
    if vocabulary is None:
        raise CommandError(f"{args.model}: a crnn model without a vocabulary; "
                           f"crnn sample needs a model written by crnn train")
    vocabulary = list(vocabulary)
    if args.prime:
        prime, shown = args.prime, args.prime
    else:
        # Default: start as at the beginning of a line (the model reads a
        # newline, not printed), or from the first symbol of a vocabulary
        # without newlines.
        prime = "\n" if "\n" in vocabulary else vocabulary[0]
        shown = "" if prime == "\n" else prime
    tokens = checkpoint["model"].sample(args.length, prime=encode(prime, vocabulary),
                                        temperature=args.temperature, seed=args.seed)
    print(shown + "".join(vocabulary[t] for t in tokens), file=out)
    return 0


def command_info(args, out):
    checkpoint, vocabulary = load_char_model(args.model)
    model = checkpoint["model"]
    count = sum(p.size for p in model.params.values())
    print(f"{args.model}: {model!r}", file=out)
    print(f"  parameters: {count:,} ({', '.join(f'{k} {v.shape}' for k, v in model.params.items())})",
          file=out)
    print(f"  file size: {os.path.getsize(args.model):,} bytes", file=out)
    if checkpoint["epoch"] is not None:
        print(f"  trained epochs: {checkpoint['epoch']}", file=out)
    if vocabulary is not None:
        print(f"  vocabulary: {len(vocabulary)} characters", file=out)
    extra = checkpoint["extra"] if isinstance(checkpoint["extra"], dict) else {}
    bits = extra.get("bits_per_char")
    if isinstance(bits, dict) and isinstance(bits.get("train"), list) \
            and isinstance(bits.get("held_out"), list):
        rows = zip(bits["train"], bits["held_out"])
        print("  bits/char by epoch (train, held-out): "
              + "; ".join(f"{a:.3f}, {b:.3f}" for a, b in rows), file=out)
    return 0


# ------------------------------------------------------------------ parser

# Option types.  Each raises ArgumentTypeError, whose message argparse shows
# as it is ("argument --hidden: expected an integer >= 1, got 'abc'"); a
# ValueError would be shown with the function's name instead.

def option_type(kind, expected, accept):
    """An argparse type: `kind` of the text, kept where `accept` holds;
    else ArgumentTypeError "expected <expected>, got <text>"."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value
    convert.__name__ = expected
    return convert


positive_int = option_type(int, "an integer >= 1", lambda value: value >= 1)
non_negative_int = option_type(int, "an integer >= 0", lambda value: value >= 0)
positive_float = option_type(float, "a number > 0",
                             lambda value: value > 0 and math.isfinite(value))
fraction = option_type(float, "a fraction in (0, 1)", lambda value: 0 < value < 1)
probability = option_type(float, "a probability in [0, 1)", lambda value: 0 <= value < 1)

# crnn train's numeric options: flag, type, default, what it is
TRAIN_OPTIONS = [
    ("--hidden", positive_int, 256, "hidden units per layer"),
    ("--layers", positive_int, 1, "stacked LSTM layers"),
    ("--epochs", positive_int, 4, "passes over the training text"),
    ("--seq-length", positive_int, 64, "truncated-BPTT length: steps per update"),
    ("--chunks", positive_int, 16, "each training row holds this many seq-length "
                                   "chunks, the state carried across them"),
    ("--batch-size", positive_int, 32, "rows per update"),
    ("--lr", positive_float, 3e-3, "Adam learning rate"),
    # 0.4: the best held-out bits/char of 0, 0.1, 0.25 and 0.4 at 256 and
    # 512 units, two seeds each (docs/training.md's table)
    ("--dropout", probability, 0.4, "dropout between layers and before the "
                                    "output layer (variational, training only)"),
    ("--validation", fraction, 0.05, "fraction of the text held out"),
    ("--max-chars", non_negative_int, 500_000,
     "use at most this many characters, 0 for all of them"),
    ("--sample-length", non_negative_int, 400,
     "characters to sample after training, 0 for none"),
    ("--temperature", positive_float, 0.7, "sampling temperature"),
    ("--seed", non_negative_int, 0, "random seed, an integer >= 0"),
]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="crnn", description="Character-level language models with crnn's LSTM.")
    parser.add_argument("--version", action="version", version=f"crnn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a character-level LSTM on a text file",
        description="Train a character-level LSTM language model by truncated "
                    "BPTT, report bits per character on held-out text after "
                    "every epoch, save a checkpoint each epoch, and print a sample. "
                    "Ctrl-C saves the weights reached and exits with status 130.")
    train.add_argument("textfile", nargs="*", metavar="TEXT",
                       help="UTF-8 text to train on: one file (read into memory), "
                            "or several files or folders of text files (read "
                            "in two streaming passes into a memory-mapped token "
                            "cache, for corpora larger than memory); default: "
                            "the source of Python's standard library, present "
                            "on every machine")
    train.add_argument("--cache", metavar="FOLDER", default=None,
                       help="folder of the token cache of a corpus of several "
                            "files or folders (default: ~/.cache/crnn/tokens)")
    train.add_argument("--model", default=None,
                       help=f"checkpoint to write each epoch (default: the --resume "
                            f"file, else {DEFAULT_MODEL}); an existing file "
                            f"other than the --resume one is refused without --force")
    train.add_argument("--force", action="store_true",
                       help="replace an existing --model file")
    train.add_argument("--resume", metavar="MODEL", default=None,
                       help="continue the run saved in this checkpoint (weights, "
                            "optimizer, epoch, random stream) up to --epochs "
                            "epochs in all; the hidden size and layers are the "
                            "checkpoint's")
    for flag, kind, default, text in TRAIN_OPTIONS:
        train.add_argument(flag, type=kind, default=default,
                           help=f"{text} (default: {default:g})")
    train.add_argument("--quiet", action="store_true",
                       help="no progress line on a terminal's stderr")
    train.set_defaults(run=command_train)

    sample = commands.add_parser(
        "sample", help="generate text from a model written by crnn train",
        description="Generate text from a character-level model written by crnn train.")
    sample.add_argument("model", help="the model file (a crnn train checkpoint)")
    sample.add_argument("-n", "--length", type=positive_int, default=500,
                        help="characters to generate (default: 500)")
    sample.add_argument("--prime", default="",
                        help="text to start from, printed before the sample "
                             "(default: the start of a line: the model reads a "
                             "newline, which is not printed)")
    sample.add_argument("--temperature", type=positive_float, default=0.7,
                        help="lower is more conservative (default: 0.7)")
    sample.add_argument("--seed", type=non_negative_int, default=None,
                        help="random seed, an integer >= 0, for a reproducible sample")
    sample.set_defaults(run=command_sample)

    info = commands.add_parser(
        "info", help="describe a saved model or checkpoint",
        description="Describe a saved crnn model or checkpoint: kind, sizes, "
                    "parameters, training progress.")
    info.add_argument("model", help="the model file")
    info.set_defaults(run=command_info)
    return parser


def _world_rank():
    try:
        return int(os.environ.get("PMI_RANK", os.environ.get(
            "OMPI_COMM_WORLD_RANK", os.environ.get("PMIX_RANK", "0"))))
    except ValueError:
        return 0


def main(argv=None, out=None):
    out = sys.stdout if out is None else out
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # Bare `crnn`: a request for help, answered on stdout.
        parser.print_help(out)
        return 0
    try:
        return args.run(args, out)
    except CommandError as error:
        print(f"crnn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C outside training (reading the corpus, sampling): nothing
        # to save; a checkpoint written before stays as it was.
        print(f"crnn {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED
    except distributed.RankError as error:
        # another MPI rank failed and printed its own error: say it once
        if error.ranks and error.ranks[0] != 0 and _world_rank() == 0:
            print(f"crnn {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        if distributed.INSTALL_HINT in str(error):
            print(f"crnn {args.command}: error: {error}", file=sys.stderr)
            return 2
        raise
    except BrokenPipeError:
        # the reader went away (crnn sample MODEL | head): not an error of ours;
        # point stdout at /dev/null so that Python's exit flush stays quiet
        if out is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 1
