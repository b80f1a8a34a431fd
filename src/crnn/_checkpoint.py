"""The trainer's checkpoints: what `Trainer.save_checkpoint` writes beside
the model and optimizer, and how ``fit(resume_from=...)`` reads it back.

Owns the trainer's part of a checkpoint (its random stream, History,
early-stopping state, in ``extra["trainer"]``, format 1), the checks that
a checkpoint fits the trainer's model and optimizer, and putting its
contents back.  The file format itself is crnn.io's.
"""
import copy
import json
import os

import numpy as np

from . import io


def shape_config(model):
    """A model's kind and constructor arguments, its seed and dropout left
    out (a run may resume with other dropout)."""
    kind, config = io.model_config(model)
    for name in ("seed", "dropout", "recurrent_dropout", "output_dropout",
                 "dropout_first_layer"):
        config.pop(name, None)
    return kind, sorted(config.items())


def _json_array(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def trainer_state(trainer, state):
    """The trainer's part of a checkpoint, from the fit's `state`."""
    history = state["history"]
    return {
        "format": 1,
        "rng": json.dumps(trainer._rng.bit_generator.state, default=_json_array),
        "history": {key: list(values) for key, values in history.history.items()},
        "history_epoch": list(history.epoch),
        "best_epoch": history.best_epoch,
        "stopped_epoch": history.stopped_epoch,
        "best_loss": float(state["best_loss"]),
        "waited": int(state["waited"]),
        "best_params": state["best_params"],
        "stopped": bool(state["stopped"]),
        "batch_size": trainer.batch_size,
        "schedule": (None if trainer.schedule is None
                     else json.dumps(trainer.schedule.state_dict())),
    }


def read_resume(trainer, path):
    """The contents of checkpoint `path`, checked against the trainer's
    model and optimizer; nothing is applied yet."""
    checkpoint = io.load_checkpoint(path)
    saved, ours = checkpoint["model"], trainer.model
    if shape_config(saved) != shape_config(ours):
        raise ValueError(
            f"resume_from {os.fspath(path)!r} holds {saved!r}, the trainer's "
            f"model is {ours!r}: resume with a model of the same shape")
    extra = checkpoint["extra"]
    state = extra.get("trainer") if isinstance(extra, dict) else None
    if not isinstance(state, dict) or state.get("format") != 1 or \
            checkpoint["epoch"] is None or checkpoint["optimizer_state"] is None:
        raise ValueError(
            f"resume_from {os.fspath(path)!r} is a crnn file without the "
            f"trainer's state; resume needs a checkpoint written by "
            f"fit(checkpoint=...) or Trainer.save_checkpoint")
    # the optimizer's own checks, on a scratch copy: nothing changes yet
    trial = copy.deepcopy(trainer.optimizer)
    trial.load_state_dict(checkpoint["optimizer_state"])
    schedule = state.get("schedule")
    if (schedule is None) != (trainer.schedule is None):
        raise ValueError(
            f"resume_from {os.fspath(path)!r} was written "
            f"{'without' if schedule is None else 'with'} a learning-rate "
            f"schedule, the trainer has {trainer.schedule!r}: resume with the "
            f"same kind of schedule")
    if schedule is not None:
        schedule = json.loads(schedule)
        copy.copy(trainer.schedule).load_state_dict(schedule)   # its checks
    return {"checkpoint": checkpoint, "trainer": state, "optimizer": trial,
            "schedule": schedule}


def apply_resume(trainer, resume, history):
    """Put `resume` (read_resume's) back: the weights, the optimizer's
    state, the random stream and `history`; returns the fit's state."""
    checkpoint, state = resume["checkpoint"], resume["trainer"]
    trainer.optimizer.load_state_dict(resume["optimizer"].state_dict())
    if resume["schedule"] is not None:
        trainer.schedule.load_state_dict(resume["schedule"])
    with trainer._guard:
        trainer.model.set_params(checkpoint["model"].params)
    trainer._rng.bit_generator.state = json.loads(state["rng"])
    history.history = {key: list(values) for key, values in state["history"].items()}
    history.epoch = list(state["history_epoch"])
    history.best_epoch = state["best_epoch"]
    history.stopped_epoch = state["stopped_epoch"]
    best_params = state["best_params"]
    return {"epoch": int(checkpoint["epoch"]), "best_loss": float(state["best_loss"]),
            "waited": int(state["waited"]),
            "best_params": None if best_params is None else dict(best_params),
            "stopped": bool(state["stopped"])}
