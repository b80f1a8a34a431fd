"""What the guard at the door costs (models.RecurrentModel._check_door,
issue 21): per cell, the guard alone (timeit) against the tiny (T=50, B=1,
D=16, H=32, K=16) loss_and_grad, and an interleaved A/B of loss_and_grad
with the guard and with it replaced by a pass-through (noisy on a busy
machine; the first figure is the one to read).

    python tools/door_overhead.py
"""
import statistics
import timeit

import numpy as np

import crnn
from crnn._model import RecurrentModel

rng = np.random.default_rng(0)
X = rng.normal(size=(1, 50, 16)).astype(np.float32)
y = rng.integers(0, 16, size=(1, 50))
real = RecurrentModel._check_door
for cls in (crnn.RNN, crnn.LSTM, crnn.GRU):
    model = cls(16, 32, 16, seed=0)
    for _ in range(300):
        model.loss_and_grad(X, y)
    _, lanes, _ = model._driver_layout()
    V, c = model._params["V"], model._params["c"]
    guard = min(timeit.repeat(lambda: model._check_door(lanes, V, c), number=20000, repeat=9)) / 20000
    with_guard, without = [], []
    for _ in range(15):
        RecurrentModel._check_door = real
        with_guard.append(min(timeit.repeat(lambda: model.loss_and_grad(X, y), number=200, repeat=3)) / 200)
        # no guard: the network tuple the last checked call left
        RecurrentModel._check_door = lambda self, lanes, V, c: self.__dict__["_door_network"]
        without.append(min(timeit.repeat(lambda: model.loss_and_grad(X, y), number=200, repeat=3)) / 200)
    RecurrentModel._check_door = real
    call = statistics.median(with_guard)
    print(f"{cls.__name__}: guard {guard * 1e9:.0f} ns, loss_and_grad {call * 1e6:.1f} us "
          f"(no guard {statistics.median(without) * 1e6:.1f} us): guard alone "
          f"{100 * guard / call:.2f} %, A/B difference "
          f"{100 * (call - statistics.median(without)) / call:+.2f} %")
