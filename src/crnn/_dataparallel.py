"""The team's side of `crnn.Trainer`: data-parallel training over MPI.

Owns what a fit does differently with ``Trainer(comm=...)``: the agreement
at the start of fit (every rank's fingerprint of its arguments, one
collective), rank 0's state broadcast to every rank, the team's step (each
rank's share of a batch, one Allreduce of the gradients and sums, the same
checked update everywhere), the collective that ends an epoch (validation
split across the ranks, rank 0's stop request), and the rule behind them
all: an error on any rank is raised on every rank at the next collective.
`TeamTraining` is a mixin of `crnn.Trainer`, which it expects to hold
``model``, ``optimizer``, ``clip_norm``, ``batch_size``, ``rank``,
``_team``, ``_rng``, ``_guard`` and the pending error and stop request.
The protocol's pieces (`Team`, `split`) are crnn.distributed's.
"""
import math
import time
import zlib

import numpy as np

from . import _data, distributed
from ._checkpoint import shape_config
from ._fitting import (apply_update, call_hooks, check_names, loss_and_grad,
                       positions_and_hits, training_options)


def number(value):
    """A number as a message shows it: 3, not 3.0."""
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


class TeamTraining:
    """The methods of `crnn.Trainer` that a team's fit adds (see the module)."""

    # ------------------------------------------------------------ agreement
    def _guarded(self, function, *args):
        """Run `function`; alone, raise its error; in a team, keep the error
        for the next collective, where every rank learns of it."""
        if self._team is None:
            return function(*args)
        if self._pending_error is not None:
            return None
        try:
            return function(*args)
        except Exception as error:
            self._pending_error = error
            return None

    def _call_agreed(self, callbacks, hook, *args):
        """Run a hook of every callback; True when training must stop.  In a
        team, rank 0's answer (its callbacks' or its stop_training) is
        every rank's, and an error on any rank is raised on all."""
        if self._team is None:
            return call_hooks(callbacks, hook, *args)
        stop = self._guarded(call_hooks, callbacks, hook, *args)
        stop = bool(stop or self.stop_training) if self.rank == 0 else False
        error = self._pending_error
        self._pending_error = None
        flags = np.array([stop, error is not None], dtype=np.float64)
        flags = self._team.allreduce(flags)
        if flags[1]:
            self._team.raise_agreed(error, int(flags[1]))
        self.stop_training = bool(flags[0])
        return self.stop_training

    def _fingerprint(self, s):
        """(name, value, how to show it) of what every rank must agree on."""
        model, data = self.model, s.data
        shape = data.shape
        validation = s.validation
        optimizer = self.optimizer.state_dict()
        settings = {key: value for key, value in optimizer.items()
                    if key == "type" or not (key == "step" or "." in key)}
        model_config = repr(shape_config(model))   # rank-dependent seeds are fine
        return [
            ("the number of sequences N", data.size, "value"),
            ("the number of steps T", shape[1], "value"),
            ("the features D", shape[2] if len(shape) == 3 else 0, "value"),
            ("dtype of X", zlib.crc32(str(data.x_dtype).encode()), "hash"),
            ("the total of lengths", int(data.lengths.sum()), "value"),
            ("shape of y", zlib.crc32(str(data.y_shape).encode()), "hash"),
            ("the validation sequences", -1 if validation is None else validation.size,
             "value"),
            ("the validation positions", -1 if validation is None
             else int(validation.lengths.sum()), "value"),
            ("batch_size", self.batch_size, "value"),
            ("epochs", s.epochs, "value"),
            ("bptt", s.bptt or 0, "value"),
            ("shuffle", int(s.shuffle), "value"),
            ("early_stopping", -1 if s.patience is None else s.patience, "value"),
            ("clip_norm", -1.0 if self.clip_norm is None else self.clip_norm, "value"),
            ("model configuration", zlib.crc32(model_config.encode()), "hash"),
            ("optimizer or optimizer settings", zlib.crc32(repr(sorted(
                (k, str(v)) for k, v in settings.items())).encode()), "hash"),
            ("resume_from (given or not)", int(s.resume_from is not None), "value"),
        ]

    def _agree_on_setup(self, setup, error):
        """The collective at the start of fit: one all-gather of every
        rank's error flag and fingerprint; raises the same error on all."""
        team = self._team
        fields = None
        if setup is not None:
            try:
                fields = self._fingerprint(setup)
            except Exception as caught:
                error = caught
        width = 1 + self._FINGERPRINT_WIDTH
        row = np.zeros(width)
        if error is not None:
            row[0] = 1
        else:
            row[1:] = [value for _, value, _ in fields]
        table = team.gather_rows(row)
        failed = int(table[:, 0].sum())
        if failed:
            team.raise_agreed(error, failed)
        for rank in range(1, team.size):
            for column, (name, _, how) in enumerate(fields, start=1):
                mine, first = table[rank, column], table[0, column]
                if mine != first:
                    given = (f"a different {name} from rank 0's" if how == "hash" else
                             f"{name} = {number(mine)}, rank 0 {number(first)}")
                    raise distributed.mark_agreed(ValueError(
                        f"rank {rank} of {team.size} was given {given}: every "
                        f"rank must call fit with the same data and arguments "
                        f"(found at the start of fit, on every rank; nothing "
                        f"was trained)"))

    _FINGERPRINT_WIDTH = 17

    def _share_rank0_state(self, state, history):
        """Rank 0's weights, optimizer state, random stream and progress on
        every rank (one broadcast)."""
        team = self._team
        payload = None
        if self.rank == 0:
            payload = {"params": {k: v.copy() for k, v in self.model.params.items()},
                       "optimizer": self.optimizer.state_dict(),
                       "rng": self._rng.bit_generator.state,
                       "schedule": (None if self.schedule is None
                                    else self.schedule.state_dict()),
                       "state": state,
                       "history": (history.history, history.epoch, history.best_epoch,
                                   history.stopped_epoch)}
        payload = team.broadcast_object(payload)
        if self.rank != 0:
            def apply():
                self.optimizer.load_state_dict(payload["optimizer"])
                if payload["schedule"] is not None:
                    self.schedule.load_state_dict(payload["schedule"])
                with self._guard:
                    self.model.set_params(payload["params"])
                self._rng.bit_generator.state = payload["rng"]
                (history.history, history.epoch, history.best_epoch,
                 history.stopped_epoch) = payload["history"]
            self._guarded(apply)
            state = payload["state"]
        return state

    # ------------------------------------------------------------ steps
    def _buffers(self, params, steps):
        """The flat send and receive buffers of a team step: every gradient
        (in the order of ``params``), then loss, positions, correct
        predictions, rank 0's stop request and the error count."""
        sizes = [p.size for p in params.values()]
        total = sum(sizes)
        dtype = np.dtype(self.model.dtype)
        if dtype == np.float32 and self.batch_size * max(steps, 1) > 2 ** 24:
            dtype = np.dtype(np.float64)   # counts must stay exact
        key = (tuple(params), tuple(sizes), dtype, self._team.size)
        if getattr(self, "_team_buffers", (None,))[0] != key:
            send = np.zeros(total + 5, dtype=dtype)
            recv = np.zeros(total + 5, dtype=dtype)
            offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
            self._team_buffers = (key, send, recv, offsets)
        return self._team_buffers[1:]

    def _share(self, rows, lengths):
        """This rank's contiguous share of sequences `rows`, balanced by
        positions (`lengths` of every sequence)."""
        team = self._team
        bounds = distributed.split(lengths[rows], team.size)
        return rows[bounds[team.rank]:bounds[team.rank + 1]]

    def _team_step(self, epoch, live, chunk, state, need_state):
        """One update from the team's shares of a batch: local sums, one
        Allreduce, then the same checked update on every rank.  Returns
        (loss, positions, correct, state, norm), or None when rank 0 asked
        to stop (nothing is applied)."""
        model, team = self.model, self._team
        params = model.params
        names = list(params)
        batch = epoch.done
        send, recv, offsets = self._buffers(params, epoch.fit.data.shape[1])
        n = offsets[-1]
        error = self._pending_error
        self._pending_error = None
        final_state = None
        loss, count, hits = 0.0, 0, 0
        # drawn on every rank, rows or not: the ranks' generators stay alike
        options = training_options(model, self._rng, live)
        if error is None and len(live):
            try:
                X, y, lengths = taken = epoch.fit.data.take(live, *chunk)
                loss, grads, final_state, outputs = loss_and_grad(
                    model, taken, state, need_state, epoch.softmax, reduction="sum",
                    **options)
                check_names(grads, names)
                for i, name in enumerate(names):
                    send[offsets[i]:offsets[i + 1]] = np.ravel(grads[name])
                count, hits = positions_and_hits(model, outputs, y, lengths)
            except Exception as caught:
                error = caught
        if error is not None or not len(live):
            send[:n] = 0
            loss, count, hits = 0.0, 0, 0
        send[n:] = (loss, count, hits, self.rank == 0 and self._pending_stop,
                    error is not None)
        began = time.perf_counter()
        team.allreduce(send, recv)
        self.allreduce_seconds += time.perf_counter() - began
        self.allreduce_calls += 1
        if recv[n + 4]:
            team.raise_agreed(error, int(recv[n + 4]))
        if recv[n + 3]:
            self._pending_stop = False
            return None
        count = int(round(float(recv[n + 1])))
        loss = float(recv[n]) / count
        hits = int(round(float(recv[n + 2])))
        if not math.isfinite(loss):
            raise epoch.failure(f"the loss is {loss}", batch)
        flat = recv[:n]
        np.multiply(flat, 1.0 / count, out=flat)
        grad_list = [np.ascontiguousarray(flat[offsets[i]:offsets[i + 1]].reshape(
            params[name].shape), dtype=params[name].dtype)
            for i, name in enumerate(names)]
        norm = apply_update(self, params, grad_list, epoch, batch)
        return loss, count, hits, final_state, norm

    def _team_batch_end(self, callbacks, batch, logs):
        """on_batch_end in a team: an error waits for the next collective,
        and rank 0's stop request is told to all there.  Returns False:
        no rank stops on its own."""
        asked = self._guarded(call_hooks, callbacks, "on_batch_end", batch, logs)
        if self.rank == 0 and (asked or self.stop_training):
            self._pending_stop = True     # told to all in the next collective
        return False

    def _team_epoch_end(self, validation, started):
        """The collective that ends a team's epoch: validation split across
        the ranks and summed, rank 0's epoch time and stop request.
        Returns (scores or None, time, stop)."""
        team = self._team
        sums = (0.0, 0, 0)
        if validation is not None:
            order = np.argsort(validation.lengths, kind="stable")
            mine = self._share(order, validation.lengths)
            result = self._guarded(_data.evaluate_rows, self.model, validation, mine,
                                   self.batch_size)
            if result is not None:
                sums = result
        error = self._pending_error
        self._pending_error = None
        if error is not None:
            sums = (0.0, 0, 0)
        elapsed = time.perf_counter() - started if self.rank == 0 else 0.0
        vector = np.array(list(sums) + [elapsed, self.rank == 0 and (
            self._pending_stop or self.stop_training), error is not None],
            dtype=np.float64)
        total = team.allreduce(vector)
        if total[5]:
            team.raise_agreed(error, int(total[5]))
        self._pending_stop = False
        scores = None
        if validation is not None:
            scores = _data.scores(self.model, float(total[0]), int(round(total[1])),
                                  int(round(total[2])))
        return scores, float(total[3]), bool(total[4])
