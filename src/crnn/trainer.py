"""crnn.Trainer: mini-batch training of a crnn model (fit, evaluate, History).

The trainer owns the training loop and nothing below it: it validates the
data once, plans the batches of each epoch (seeded shuffling; ragged
sequences bucketed by length), calls ``model.loss_and_grad`` once per step,
checks the loss and the gradients, clips them, and hands them to a
``crnn.optim`` optimizer that updates ``model.params`` in place.  Around that
loop: validation, early stopping, callbacks, a progress bar, truncated BPTT,
the NaN guard and Ctrl-C handling.  The user guide is docs/training.md.

This module holds the public `Trainer` and the fit's loop (epochs, early
stopping, batches, a process's own step); the rest lives beside it, each
module saying what it owns: _history (History, NonFiniteError, the
progress display), _data (the data set, read whole or batch by batch; the
batches of an epoch; scoring), _fitting (what every step shares: the
settings, the update, the callbacks, the Ctrl-C guard), _checkpoint
(checkpoints and resume) and _dataparallel (the team's side of fit, MPI).

Guarantees, each tested in tests/test_trainer.py:

- a step is all or nothing: the loss and every gradient are checked before
  the update; the update itself is refused if it would produce a non-finite
  weight; Ctrl-C is held back while an update is being written;
- with the same seeds (model and trainer) and one BLAS thread, two runs give
  bit-identical weights.
"""
import math
import os
import time

import numpy as np

from . import _inputs, distributed, io, optim
from ._checkpoint import apply_resume, read_resume, trainer_state
from ._data import Data, evaluate_rows, plan_batches, scores
from ._dataparallel import TeamTraining
from ._fitting import (Epoch, FitSettings, InterruptGuard, apply_update,
                       call_hooks, check_callbacks, check_names,
                       check_optional_int, check_validation, loss_and_grad,
                       positions_and_hits, training_options)
from ._history import History, NonFiniteError, Progress
from ._schedules import check_schedule

__all__ = ["Trainer", "History", "NonFiniteError"]


class Trainer(TeamTraining):
    """Trains a crnn model by mini-batch gradient descent.

    Each step computes ``model.loss_and_grad`` on a batch, checks the loss
    and gradients, clips them and hands them to an optimizer that updates
    ``model.params`` in place.

    Parameters
    ----------
    model : crnn.RNN, crnn.LSTM or crnn.GRU
        The model to train, with an output layer (``"softmax"`` or
        ``"linear"``).
    optimizer : str or crnn.optim.Optimizer, default "adam"
        ``"sgd"``, ``"momentum"`` (SGD with momentum 0.9), ``"adam"``,
        ``"rmsprop"`` or ``"adagrad"`` (any case), built with `lr` and
        `weight_decay`; or an optimizer object, which brings its own
        settings (`lr` and `weight_decay` must then stay at their
        defaults).
    lr : float, default 1e-3
        The learning rate of a named optimizer.
    batch_size : int, default 32
        Sequences per step (the last batch of an epoch may be smaller).
    clip_norm : float, optional
        When the global L2 norm of all gradients exceeds it, scale them
        down to it (PyTorch's ``clip_grad_norm_``).
    weight_decay : float, default 0.0
        An L2 penalty added to the gradient of every parameter.
    seed : int, optional
        Seeds the shuffling of the batches; None draws fresh randomness.
    comm : mpi4py communicator, optional
        For synchronous data-parallel training (``MPI.COMM_WORLD`` or any
        sub-communicator): every rank runs the same script, `batch_size` is
        the global batch, and the result is that of one process (see
        docs/distributed.md).  None trains in this process alone.
    schedule : crnn.optim.Schedule or callable, optional
        A learning-rate schedule on the trainer's optimizer (`StepLR`, ...,
        from `crnn.optim`), or a callable that builds one from it, e.g.
        ``lambda opt: crnn.optim.StepLR(opt, step_size=5)``.  The trainer
        steps it after every update or every epoch (as the schedule
        defines), records ``"lr"`` in the History per epoch, and keeps its
        state in checkpoints.

    Attributes
    ----------
    model
        The model being trained.
    optimizer : crnn.optim.Optimizer
        Its ``lr`` may be changed between steps (from a callback).
    history : History or None
        The last fit's record.
    stop_training : bool
        Set it to True from a callback to stop after the current step.
    comm, rank, size
        The communicator, this process's rank and the number of ranks (None,
        0 and 1 without a communicator).

    Raises
    ------
    TypeError
        `model` is not a crnn model, or a wrongly typed argument.
    ValueError
        The model has no output layer, an unknown optimizer name, a
        value out of range, or `lr` / `weight_decay` given with an
        optimizer object.

    See Also
    --------
    crnn.optim : the optimizers.

    Examples
    --------
    >>> model = crnn.LSTM(4, 16, 3, seed=0)
    >>> X = np.random.default_rng(0).normal(size=(32, 10, 4))
    >>> y = (X[..., 0] > 0).astype(int) + (X[..., 1] > 0)   # classes 0, 1, 2
    >>> trainer = crnn.Trainer(model, optimizer="adam", lr=1e-2, batch_size=8,
    ...                        clip_norm=5.0, seed=0)
    >>> history = trainer.fit(X, y, epochs=5, validation_data=(X, y), verbose=0)
    >>> history.history["val_loss"][-1] < history.history["val_loss"][0]
    True
    >>> sorted(trainer.evaluate(X, y))
    ['accuracy', 'loss']
    """

    #: Ragged data is bucketed by length within pools of this many batches
    #: (as torchtext's BucketIterator does): batches carry little padding
    #: yet change composition from epoch to epoch.
    bucket_pool = 100

    #: With a communicator: the ranks whose fit prints (progress bar, epoch
    #: lines, notes); the others are silent.  Set it on an instance, e.g.
    #: ``trainer.verbose_ranks = range(trainer.size)`` to hear every rank.
    verbose_ranks = (0,)

    def __init__(self, model, optimizer="adam", lr=1e-3, batch_size=32,
                 clip_norm=None, weight_decay=0.0, seed=None, comm=None,
                 schedule=None):
        if not (hasattr(model, "loss_and_grad") and hasattr(model, "params")
                and hasattr(model, "return_sequences")):
            raise TypeError(
                f"model must be a crnn model (crnn.RNN, LSTM or GRU), got "
                f"{type(model).__name__}")
        if model.output is None:
            raise ValueError(
                "the Trainer needs a model with an output layer (output="
                "'softmax' or 'linear'); this model has output=None")
        self.model = model
        self.batch_size = _inputs.check_positive_int(batch_size, "batch_size")
        if clip_norm is not None:
            clip_norm = optim._check_number(clip_norm, "clip_norm", above=0)
        self.clip_norm = clip_norm
        lr = optim._check_number(lr, "lr", minimum=0)
        weight_decay = optim._check_number(weight_decay, "weight_decay", minimum=0)
        if isinstance(optimizer, optim.Optimizer) and (lr != 1e-3 or weight_decay != 0):
            raise ValueError(
                f"lr and weight_decay are set on the optimizer object "
                f"({optimizer!r}); got lr={lr:g}, weight_decay={weight_decay:g} "
                f"as well: leave them at their defaults (1e-3, 0)")
        self.optimizer = optim.get(optimizer, lr, weight_decay)
        self.schedule = check_schedule(schedule, self.optimizer)
        if seed is not None and (isinstance(seed, (bool, np.bool_))
                                 or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.stop_training = False
        self.history = None
        self._guard = InterruptGuard()
        self._collectives_left = False
        self._pending_error = None
        self._pending_stop = False
        # seconds in (and calls of) the steps' Allreduce in the last fit,
        # waiting for the slowest rank included (benchmarks/bench_scaling.py)
        self.allreduce_seconds, self.allreduce_calls = 0.0, 0
        self.comm = None if comm is None else distributed.check_comm(comm)
        self._team = None if comm is None else distributed.Team(comm)
        self.rank = 0 if comm is None else self._team.rank
        self.size = 1 if comm is None else self._team.size

    # ============================================================ fit
    def fit(self, X, y, lengths=None, epochs=1, validation_data=None,
            shuffle=True, early_stopping=None, callbacks=(), verbose=1,
            bptt=None, checkpoint=None, resume_from=None):
        """Train for a number of passes over the data.

        Every epoch the sequences are shuffled (seeded) and cut into batches;
        sequences of different lengths are bucketed by length so batches
        carry little padding.  Each batch is one step: ``loss_and_grad``,
        the NaN guard, clipping, the optimizer's update.

        Parameters
        ----------
        X, y, lengths
            The data, as ``model.loss_and_grad`` takes it.  It is checked
            once, before training starts.
        epochs : int, default 1
            Passes over the data.
        validation_data : tuple, optional
            ``(Xv, yv)`` or ``(Xv, yv, lengths_v)``, evaluated after every
            epoch (``val_loss``, and ``val_accuracy`` for softmax models).
        shuffle : bool, default True
            Reshuffle the sequences every epoch.  False keeps their order
            (sorted by length, stably, when the lengths differ).
        early_stopping : int, optional
            A patience: stop once the monitored loss (``val_loss``, or the
            training loss without validation data) has not improved for
            this many epochs.  The best epoch's weights are restored when
            fit ends.
        callbacks : object or sequence of objects, default ()
            Objects with any of ``on_train_begin(logs)``,
            ``on_epoch_begin(epoch, logs)``, ``on_batch_end(batch, logs)``,
            ``on_epoch_end(epoch, logs)`` and ``on_train_end(logs)``.  A
            hook that returns True (or sets ``trainer.stop_training``)
            stops training.
        verbose : {0, 1, 2}, default 1
            1: a progress bar on stderr when it is a terminal, and a line
            per epoch; 2: only the line per epoch; 0: nothing.
        bptt : int, optional
            Truncated back-propagation through time: cut the sequences into
            chunks of this many steps, one update per chunk, the state
            carried from chunk to chunk without a gradient.  Needs a
            many-to-many, one-direction model.
        checkpoint : str or os.PathLike, optional
            After every epoch, write a checkpoint there (``save_checkpoint``)
            that `resume_from` continues.
        resume_from : str or os.PathLike, optional
            A checkpoint written by `checkpoint` or ``save_checkpoint``:
            continue from it (weights, optimizer state, epoch counter, the
            trainer's random stream, History, early-stopping state) up to
            `epochs` epochs in all.

        Returns
        -------
        History
            The per-epoch losses (and accuracies) and how training ended.

        Raises
        ------
        crnn.trainer.NonFiniteError
            A NaN or infinite loss, gradient or update; the model keeps the
            weights from before that step, and the error's ``history`` the
            completed epochs.
        TypeError, ValueError
            Bad data or arguments, before any training.

        Notes
        -----
        Ctrl-C ends fit after the last completed step and returns the
        History so far, with ``interrupted`` True; an update being written
        when it arrives is completed first.  With the same seeds (model and
        trainer), the same data and BLAS on one thread, two runs give
        bit-identical weights.  With ``comm`` (see the class), every rank
        calls fit with the same arguments; the result is that of one
        process (docs/distributed.md).

        Examples
        --------
        >>> model = crnn.GRU(input_size=6, hidden_size=16, seed=0)
        >>> text = np.random.default_rng(0).integers(0, 6, size=(8, 41))
        >>> X, y = text[:, :-1], text[:, 1:]          # next-token targets
        >>> trainer = crnn.Trainer(model, lr=1e-2, batch_size=4, seed=0)
        >>> history = trainer.fit(X, y, epochs=3, bptt=10, verbose=0)
        >>> len(history.history["loss"]), history.params["bptt"]
        (3, 10)
        """
        arguments = dict(X=X, y=y, lengths=lengths, epochs=epochs,
                         validation_data=validation_data, shuffle=shuffle,
                         early_stopping=early_stopping, callbacks=callbacks,
                         verbose=verbose, bptt=bptt, checkpoint=checkpoint,
                         resume_from=resume_from)
        team = self._team
        if team is None:
            return self._run(self._setup(arguments))
        # Every rank checks its own arguments; one collective then compares
        # a fingerprint of them and shares any error, so that all ranks
        # raise together, before any other communication.
        setup, error = None, None
        try:
            setup = self._setup(arguments)
        except Exception as caught:       # shared with the other ranks below
            error = caught
        self._agree_on_setup(setup, error)
        self._collectives_left = True
        try:
            return self._run(setup)
        except BaseException as caught:
            if self._collectives_left and team.size > 1 and \
                    not getattr(caught, "_crnn_agreed", False):
                # an error the other ranks cannot hear of (Ctrl-C, an error
                # outside the agreed points): end the job, never a hang
                team.abort(caught)
            raise
        finally:
            self._collectives_left = False

    def _setup(self, arguments):
        """Check fit's `arguments` (a dict of them, and read `resume_from`);
        returns the FitSettings; raises on the first problem, before
        anything changes."""
        model = self.model
        shuffle, verbose, bptt = (arguments[name] for name in ("shuffle", "verbose", "bptt"))
        epochs = _inputs.check_positive_int(arguments["epochs"], "epochs")
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        patience = check_optional_int(arguments["early_stopping"], "early_stopping", 0)
        if isinstance(verbose, (bool, np.bool_)):
            verbose = int(verbose)
        if verbose not in (0, 1, 2) or not isinstance(verbose, (int, np.integer)):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        callbacks = check_callbacks(arguments["callbacks"])
        bptt = check_optional_int(bptt, "bptt", 1)
        if bptt is not None and not model.return_sequences:
            raise ValueError(
                "bptt needs a model with return_sequences=True (a target at "
                "every step); this model has return_sequences=False, train "
                "it with bptt=None")
        if bptt is not None and model.bidirectional:
            raise ValueError(
                "bptt needs a unidirectional model: the backward direction of "
                "a bidirectional model cannot carry its state from one chunk "
                "to the next; train it with bptt=None")
        checkpoint, resume_from = arguments["checkpoint"], arguments["resume_from"]
        for name, value in (("checkpoint", checkpoint), ("resume_from", resume_from)):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise TypeError(f"{name} must be a path (str or os.PathLike) or "
                                f"None, got {type(value).__name__}")
        data = Data(model, arguments["X"], arguments["y"], arguments["lengths"], "")
        validation = check_validation(model, arguments["validation_data"])
        check_schedule(self.schedule, self.optimizer, validation is not None)
        setup = FitSettings(data=data, validation=validation, epochs=epochs,
                            shuffle=bool(shuffle), patience=patience, verbose=verbose,
                            callbacks=callbacks, bptt=bptt, checkpoint=checkpoint,
                            resume_from=resume_from)
        # Only rank 0 reads the checkpoint (the other ranks get its contents
        # from rank 0's broadcast, so the file need not be on their disks).
        if resume_from is not None and self.rank == 0:
            setup.state = read_resume(self, resume_from)
        return setup

    def _run(self, s):
        """The fit itself, from the checked settings `s`; returns History."""
        model = self.model
        team = self._team
        epochs, callbacks = s.epochs, s.callbacks
        validation = s.validation
        self.stop_training = False
        self._pending_error = None
        self._pending_stop = False
        self.allreduce_seconds, self.allreduce_calls = 0.0, 0
        progress = s.progress = Progress(
            s.verbose if self.rank in self.verbose_ranks else 0, epochs)
        history = s.history = History({"epochs": epochs, "batch_size": self.batch_size,
                                       "bptt": s.bptt, "samples": s.data.size})
        monitor = "val_loss" if validation is not None else "loss"
        state = {"epoch": 0, "best_loss": math.inf, "waited": 0,
                 "best_params": None, "stopped": False}
        if s.state is not None:                      # resume_from (rank 0)
            state = apply_resume(self, s.state, history)
        if team is not None:
            state = self._share_rank0_state(state, history)
        self.history = history
        self._fit_state = state
        self._fit_state["history"] = history
        self._fit_state["monitor"] = monitor
        if s.state is not None or state["epoch"]:
            progress.note(f"Resuming after epoch {state['epoch']}")

        single = team is None
        if single:
            self._guard.install()
        try:
            stop = self._call_agreed(callbacks, "on_train_begin", {})
            if state["stopped"]:
                stop = True        # the checkpointed run had already stopped
            for epoch in range(state["epoch"], epochs):
                if stop or self.stop_training:
                    break
                stop = self._call_agreed(callbacks, "on_epoch_begin", epoch, {})
                if stop or self.stop_training:
                    break
                started = time.perf_counter()
                current, stop = self._train_epoch(s, epoch)
                logs = current.logs()
                if single:
                    if validation is not None:
                        found = self._evaluate(validation, self.batch_size)
                        logs.update({f"val_{key}": value for key, value in found.items()})
                    logs["time"] = time.perf_counter() - started
                else:
                    found, logs["time"], stop_now = self._team_epoch_end(
                        validation, started)
                    stop = stop or stop_now
                    if found is not None:
                        logs.update({f"val_{key}": value for key, value in found.items()})
                if self.schedule is not None:
                    logs["lr"] = self.optimizer.lr      # the epoch's last rate
                history._record(epoch, logs)
                progress.end_epoch(current.done, current.sequences, logs)
                if s.patience is not None:
                    stop = self._early_stopping(s, state, logs, epoch) or stop
                state["epoch"] = epoch + 1
                state["stopped"] = bool(stop) and epoch < epochs - 1
                if self.schedule is not None:
                    self.schedule.epoch_end(logs)
                if s.checkpoint is not None:
                    self._guarded(self.save_checkpoint, s.checkpoint)
                stop = self._call_agreed(callbacks, "on_epoch_end", epoch, dict(logs)) or stop
                if (stop or self.stop_training) and epoch < epochs - 1:
                    history.stopped_epoch = epoch
            self._collectives_left = False
            best_params = state["best_params"]
            if best_params is not None and history.epoch and \
                    history.best_epoch != history.epoch[-1]:
                with self._guard:
                    model.set_params(best_params)
                progress.note(f"Restored the weights of epoch {history.best_epoch + 1} "
                              f"({monitor} {state['best_loss']:.4f})")
            call_hooks(callbacks, "on_train_end", {})
        except KeyboardInterrupt:
            if not single:
                raise                    # under MPI: the job ends (see fit)
            history.interrupted = True
            progress.note("Interrupted: the model holds the weights after the "
                          "last completed step")
        except NonFiniteError as error:
            progress.note(f"Stopped: {error}")
            raise
        finally:
            if single:
                self._guard.uninstall()
        return history

    def _early_stopping(self, s, state, logs, epoch):
        """Keep the best weights so far in `state`; True once the monitored
        loss has not improved for ``s.patience`` epochs."""
        monitor, history = state["monitor"], state["history"]
        if logs[monitor] < state["best_loss"]:
            state["best_loss"], state["waited"] = logs[monitor], 0
            state["best_params"] = {k: v.copy() for k, v in self.model.params.items()}
            history.best_epoch = epoch
            return False
        state["waited"] += 1
        if state["waited"] < s.patience:
            return False
        s.progress.note(f"Early stopping: {monitor} has not improved for "
                        f"{state['waited']} epoch(s) since epoch "
                        f"{history.best_epoch + 1}")
        return True

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path, extra=None):
        """Write a checkpoint that ``fit(..., resume_from=path)`` continues.

        It holds the model, the optimizer's state, the number of completed
        epochs, and in ``extra["trainer"]`` the trainer's random stream,
        History and early-stopping state, so that the resumed run is the
        run that would have gone on.  Meant for the end of an epoch
        (``on_epoch_end``, or ``fit(checkpoint=path)``, which calls it).

        Parameters
        ----------
        path : str or os.PathLike
            The file, written atomically.
        extra : dict, optional
            Your own JSON-serialisable data, kept beside the trainer's.

        Returns
        -------
        bool
            True when this process wrote the file: with ``comm`` only rank
            0 writes, and the others return False at once.

        Raises
        ------
        TypeError
            `extra` is not a dict.
        RuntimeError
            No fit has started: there is no progress to record.
        """
        if extra is not None and not isinstance(extra, dict):
            raise TypeError(f"extra must be a dict or None, got {type(extra).__name__}")
        if self.rank != 0:
            return False
        state = getattr(self, "_fit_state", None)
        if state is None:
            raise RuntimeError("save_checkpoint needs a fit in progress or done: "
                               "it records the trainer's progress through fit")
        contents = dict(extra or {})
        contents["trainer"] = trainer_state(self, state)
        io.save_checkpoint(path, self.model, optimizer_state=self.optimizer.state_dict(),
                           epoch=int(state["epoch"]), extra=contents)
        return True

    # ------------------------------------------------------------ epochs
    def _train_epoch(self, s, number):
        """One pass over the data (epoch `number` of the fit `s`); returns
        the Epoch (its sums, steps done, sequences seen) and whether
        training stops.  Alone, each batch is a step of this process; in a
        team, every rank plans the same batches and computes its own share
        of each (see docs/distributed.md)."""
        data, bptt = s.data, s.bptt
        batches = self._plan(data.lengths, s.shuffle)
        if bptt is None:
            total = len(batches)
        else:
            total = sum(-(-int(data.lengths[rows].max()) // bptt) for rows in batches)
        current = Epoch(number, s, total, self.model.output == "softmax",
                        agreed=self._team is not None)
        s.progress.begin_epoch(number, total)
        stop = False
        for rows in batches:
            stop = self._train_batch(current, rows)
            if stop or (self._team is None and self.stop_training):
                break
        return current, stop

    def _train_batch(self, current, rows):
        """The steps of batch `rows`: one, or with bptt one per chunk, the
        state carried from chunk to chunk.  Returns True when a callback
        (alone) or rank 0 (in a team) stops training."""
        s, team = current.fit, self._team
        data, bptt = s.data, s.bptt
        mine = rows if team is None else self._share(rows, data.lengths)
        longest = int(data.lengths[rows].max())
        chunks = [(0, None)] if bptt is None else [
            (start, start + bptt) for start in range(0, longest, bptt)]
        step = self._step if team is None else self._team_step
        state, alive = None, None
        for start, stop_step in chunks:
            live = mine if start == 0 else mine[data.lengths[mine] > start]
            if state is not None and len(live) < len(alive):
                # sequences that ended in the last chunk drop out
                keep = np.isin(alive, live)
                state = (tuple(part[:, keep] for part in state)
                         if isinstance(state, tuple) else state[:, keep])
            everyone = int(np.count_nonzero(data.lengths[rows] > start))
            last_chunk = stop_step is None or stop_step >= longest
            result = step(current, live, (start, stop_step), state, not last_chunk)
            if result is None:      # rank 0 asked to stop after the last step
                return True
            loss, count, hits, state, norm = result
            alive = live
            current.add(loss, count, hits, everyone if start == 0 else 0)
            batch_logs = {"loss": loss, "size": everyone, "positions": count,
                          "grad_norm": norm}
            if bptt is not None:
                batch_logs["chunk"] = start // bptt
            s.progress.update(current.done, current.loss_sum / current.positions,
                              current.sequences)
            if team is not None:
                self._team_batch_end(s.callbacks, current.done - 1, batch_logs)
                continue
            stop = call_hooks(s.callbacks, "on_batch_end", current.done - 1, batch_logs)
            if stop or self.stop_training:
                return stop
        return False

    def _step(self, current, live, chunk, state, need_state):
        """One checked update of this process on sequences `live`, steps
        `chunk` = (start, stop); returns (loss, positions, correct, state,
        norm)."""
        model = self.model
        batch = current.done
        X, y, lengths = taken = current.fit.data.take(live, *chunk)
        loss, grads, final_state, outputs = loss_and_grad(
            model, taken, state, need_state, current.softmax,
            **training_options(model, self._rng, live))
        if not math.isfinite(loss):
            raise current.failure(f"the loss is {loss}", batch)
        params = model.params
        names = list(params)
        check_names(grads, names)
        grad_list = [np.ascontiguousarray(grads[name], dtype=params[name].dtype)
                     for name in names]
        norm = apply_update(self, params, grad_list, current, batch)
        count, correct = positions_and_hits(model, outputs, y, lengths)
        return loss, count, correct, final_state, norm

    def _plan(self, lengths, shuffle):
        """The batches of one epoch, as arrays of sequence indices."""
        return plan_batches(self._rng, lengths, self.batch_size, self.bucket_pool,
                            shuffle)

    # ============================================================ evaluate
    def evaluate(self, X, y, lengths=None, batch_size=None):
        """The model's loss (and accuracy) on a data set, without training.

        Parameters
        ----------
        X, y, lengths
            The data, as ``model.loss_and_grad`` takes it.
        batch_size : int, optional
            Sequences per forward pass; default: the trainer's.

        Returns
        -------
        dict
            ``{"loss": ..., "accuracy": ...}`` for softmax models,
            ``{"loss": ...}`` for linear ones.  The loss is the model's:
            the mean over positions with a target of the cross-entropy, or
            of ½‖o − y‖² summed over the outputs; the accuracy is the
            fraction of those positions whose most likely class is the
            target.

        Raises
        ------
        TypeError, ValueError
            Bad data or `batch_size`.

        Examples
        --------
        >>> model = crnn.RNN(3, 8, 2, seed=0)
        >>> X = np.random.default_rng(0).normal(size=(6, 5, 3))
        >>> y = np.random.default_rng(1).integers(0, 2, size=(6, 5))
        >>> scores = crnn.Trainer(model).evaluate(X, y)
        >>> bool(np.isclose(scores["loss"], model.loss_and_grad(X, y)[0]))
        True
        >>> 0 <= scores["accuracy"] <= 1
        True
        """
        batch_size = (self.batch_size if batch_size is None
                      else _inputs.check_positive_int(batch_size, "batch_size"))
        return self._evaluate(Data(self.model, X, y, lengths, ""), batch_size)

    def _evaluate(self, data, batch_size):
        order = np.argsort(data.lengths, kind="stable")
        return scores(self.model, *evaluate_rows(self.model, data, order, batch_size))

    def __repr__(self):
        team = "" if self._team is None else f", rank={self.rank} of {self.size}"
        return (f"Trainer({self.model!r}, optimizer={self.optimizer!r}, "
                f"batch_size={self.batch_size}, clip_norm={self.clip_norm}{team})")
