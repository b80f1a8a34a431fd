"""A plain numpy float64 vanilla RNN, written straight from MODEL.md.

This is the oracle the crnn tests compare against. It is deliberately naive:
one sequence at a time, one time step at a time, no batching, no hoisting, no
sorting by length, so that every line can be read against the formulas of
MODEL.md (part 1 and "Conventions"):

    z(t) = U x(t) + W h(t-1) + b,   h(t) = tanh(z(t))  (or relu)
    o(t) = V h(t) + c,  ŷ(t) = softmax(o(t)),  L(t) = -log ŷ(t)[y(t)]
    (linear output: ŷ(t) = o(t),  L(t) = ½‖o(t) - y(t)‖²)

    δ(t) = ∂L/∂h(t) = Vᵀ(ŷ(t) - y(t)) + Wᵀ g(t+1),   g(t) = act'(z(t)) ⊙ δ(t)
    ∂L/∂U = Σ g xᵀ,  ∂L/∂W = Σ g h(t-1)ᵀ,  ∂L/∂b = Σ g,  ∂L/∂x = Uᵀ g,
    ∂L/∂h0 = Wᵀ g(first).

Layer l > 0 reads [h_fwd(t), h_rev(t)] of layer l-1. The reverse direction runs
over each sequence reversed within its own length: its "first" position is the
sequence's last real position and its final state is the h at position 0.
States are laid out like PyTorch: index l * dirs + d.

Only this module and ``torch_helper`` are helpers; neither imports crnn.
"""

import numpy as np

__all__ = ["RefResult", "rnn_reference", "to_padded", "pad_targets", "param_shapes"]


class RefResult:
    """What one reference call produces.

    Y       (N, T, K) / (N, K) outputs (probabilities, values or top-layer h),
            zero rows past a sequence's length
    state   (num_layers * dirs, N, H) final h of each sequence and layer/direction
    loss    float (None when there is no target)
    grads   dict like the params (None when there is no target)
    dstate  (num_layers * dirs, N, H) gradient w.r.t. the initial state
    """

    def __init__(self, Y, state, loss, grads, dstate):
        self.Y = Y
        self.state = state
        self.loss = loss
        self.grads = grads
        self.dstate = dstate


def _suffix(d):
    return "" if d == 0 else "_reverse"


def param_shapes(input_size, hidden_size, output_size, num_layers=1,
                 bidirectional=False, output="softmax"):
    """The shapes of the params dict of API.md for a vanilla RNN (G = 1)."""
    dirs = 2 if bidirectional else 1
    shapes = {}
    for l in range(num_layers):
        d_in = input_size if l == 0 else hidden_size * dirs
        for d in range(dirs):
            s = _suffix(d)
            shapes[f"U{l}{s}"] = (hidden_size, d_in)
            shapes[f"W{l}{s}"] = (hidden_size, hidden_size)
            shapes[f"b{l}{s}"] = (hidden_size,)
    if output is not None:
        shapes["V"] = (output_size, hidden_size * dirs)
        shapes["c"] = (output_size,)
    return shapes


def to_padded(X, lengths=None, input_size=None):
    """Turn any accepted X into a float64 (N, T, D) array and int lengths (N,).

    Accepts a float (N, T, D) array, an integer (N, T) token array (one-hot with
    ``input_size`` classes), or a list of (T_i, D) float / (T_i,) int arrays.
    Padded positions of a list input are filled with zeros.
    """
    if isinstance(X, (list, tuple)):
        seqs = [np.asarray(s) for s in X]
        lens = np.array([s.shape[0] for s in seqs], dtype=np.int64)
        T = int(lens.max())
        first = seqs[0]
        if first.ndim == 1:
            padded = np.zeros((len(seqs), T), dtype=np.int64)
        else:
            padded = np.zeros((len(seqs), T, first.shape[1]), dtype=np.float64)
        for i, s in enumerate(seqs):
            padded[i, : s.shape[0]] = s
        if lengths is None:
            lengths = lens
        X = padded
    X = np.asarray(X)
    if X.ndim == 2:
        if not np.issubdtype(X.dtype, np.integer):
            raise TypeError("2-D X must hold integer token ids")
        if input_size is None:
            raise ValueError("token input needs input_size")
        N, T = X.shape
        onehot = np.zeros((N, T, input_size), dtype=np.float64)
        if lengths is None:
            lens_tmp = np.full(N, T)
        else:
            lens_tmp = np.asarray(lengths)
        for n in range(N):
            for t in range(int(lens_tmp[n])):
                onehot[n, t, X[n, t]] = 1.0
        X = onehot
    X = np.asarray(X, dtype=np.float64)
    N, T = X.shape[:2]
    if lengths is None:
        lengths = np.full(N, T, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    return X, lengths


def pad_targets(y, T=None):
    """A list of (T_i,) / (T_i, K) targets becomes a zero-padded array."""
    if not isinstance(y, (list, tuple)):
        return np.asarray(y)
    ys = [np.asarray(v) for v in y]
    if T is None:
        T = max(v.shape[0] for v in ys)
    out = np.zeros((len(ys), T) + ys[0].shape[1:], dtype=ys[0].dtype)
    for i, v in enumerate(ys):
        out[i, : v.shape[0]] = v
    return out


def _act(z, nonlinearity):
    if nonlinearity == "tanh":
        return np.tanh(z)
    if nonlinearity == "relu":
        return np.maximum(z, 0.0)
    raise ValueError(nonlinearity)


def _act_deriv(z, h, nonlinearity):
    if nonlinearity == "tanh":
        return 1.0 - h * h          # tanh' = 1 - h²
    return (z > 0).astype(np.float64)   # relu' = [z > 0]


def _softmax(o):
    e = np.exp(o - o.max())
    return e / e.sum()


def rnn_reference(params, X, y=None, lengths=None, initial_state=None, *,
                  num_layers=1, bidirectional=False, nonlinearity="tanh",
                  output="softmax", return_sequences=True, reduction="mean"):
    """Forward (and, when ``y`` is given, BPTT) of the vanilla RNN in float64.

    ``params`` uses crnn's keys (U{l}, W{l}, b{l}, ..._reverse, V, c).
    Returns a :class:`RefResult`.
    """
    P = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    dirs = 2 if bidirectional else 1
    H = P["W0"].shape[1]
    D = P["U0"].shape[1]
    X, lengths = to_padded(X, lengths, D)
    N, T = X.shape[:2]
    if initial_state is None:
        h0 = np.zeros((num_layers * dirs, N, H))
    else:
        h0 = np.asarray(initial_state, dtype=np.float64)
    F = H * dirs
    K = P["V"].shape[0] if output is not None else F

    has_target = y is not None and output is not None
    if has_target:
        y = pad_targets(y, T if return_sequences else None)
        if output == "linear":
            y = np.asarray(y, dtype=np.float64)
            # a trailing K = 1 may be left out
            if return_sequences and y.ndim == 2:
                y = y[:, :, None]
            if not return_sequences and y.ndim == 1:
                y = y[:, None]
        count = int(lengths.sum()) if return_sequences else N
        scale = 1.0 / count if reduction == "mean" else 1.0
        grads = {k: np.zeros_like(v) for k, v in P.items()}
        dstate = np.zeros_like(h0)
        loss_total = 0.0
    else:
        grads = dstate = None
        loss_total = None

    Y = np.zeros((N, T, K)) if return_sequences else np.zeros((N, K))
    state = np.zeros((num_layers * dirs, N, H))

    for n in range(N):
        Tn = int(lengths[n])
        inp = X[n, :Tn]                      # (Tn, D_l)
        caches = []
        # ---------------- forward, layer by layer, direction by direction
        for l in range(num_layers):
            outs = []
            layer_cache = []
            for d in range(dirs):
                s = _suffix(d)
                U, W, b = P[f"U{l}{s}"], P[f"W{l}{s}"], P[f"b{l}{s}"]
                h_init = h0[l * dirs + d, n]
                hs = np.zeros((Tn, H))
                zs = np.zeros((Tn, H))
                order = list(range(Tn)) if d == 0 else list(range(Tn - 1, -1, -1))
                h_prev = h_init
                for t in order:
                    z = U @ inp[t] + W @ h_prev + b
                    h = _act(z, nonlinearity)
                    zs[t] = z
                    hs[t] = h
                    h_prev = h
                # forward: h at Tn-1; reverse: h at position 0
                state[l * dirs + d, n] = h_prev
                outs.append(hs)
                layer_cache.append((inp, hs, zs, h_init, order))
            caches.append(layer_cache)
            inp = np.concatenate(outs, axis=1)   # (Tn, H * dirs)
        top = inp
        if return_sequences:
            feats = top                          # (Tn, F)
        else:
            # the top layer's final state: PyTorch's h_n[-2], h_n[-1]
            feat = top[Tn - 1, :H]
            if dirs == 2:
                feat = np.concatenate([feat, top[0, H:]])
            feats = feat[None, :]                # (1, F)

        # ---------------- output layer and loss
        if output is None:
            if return_sequences:
                Y[n, :Tn] = feats
            else:
                Y[n] = feats[0]
            continue
        V, c = P["V"], P["c"]
        O = feats @ V.T + c                       # (rows, K)
        if output == "softmax":
            out_vals = np.array([_softmax(o) for o in O])
        else:
            out_vals = O
        if return_sequences:
            Y[n, :Tn] = out_vals
        else:
            Y[n] = out_vals[0]
        if not has_target:
            continue

        if return_sequences:
            targets = y[n, :Tn]
        else:
            targets = y[n : n + 1]
        dO = np.zeros_like(O)
        for r in range(O.shape[0]):
            if output == "softmax":
                cls = int(targets[r])
                # -log softmax(o)[y] = logsumexp(o) - o[y], finite for any o
                m = O[r].max()
                loss_total += m + np.log(np.exp(O[r] - m).sum()) - O[r, cls]
                dO[r] = out_vals[r]
                dO[r, cls] -= 1.0                # ŷ - onehot(y)
            else:
                diff = O[r] - targets[r]
                loss_total += 0.5 * float(diff @ diff)
                dO[r] = diff                     # o - y
        dO *= scale

        # ---------------- BPTT
        grads["V"] += dO.T @ feats               # Σ (ŷ - y) hᵀ
        grads["c"] += dO.sum(axis=0)
        dfeats = dO @ V                          # Vᵀ (ŷ - y), as rows
        dtop = np.zeros((Tn, F))
        if return_sequences:
            dtop += dfeats
        else:
            dtop[Tn - 1, :H] += dfeats[0, :H]
            if dirs == 2:
                dtop[0, H:] += dfeats[0, H:]
        for l in range(num_layers - 1, -1, -1):
            layer_in = caches[l][0][0]
            dinp = np.zeros_like(layer_in)
            for d in range(dirs):
                s = _suffix(d)
                U, W = P[f"U{l}{s}"], P[f"W{l}{s}"]
                gU, gW, gb = grads[f"U{l}{s}"], grads[f"W{l}{s}"], grads[f"b{l}{s}"]
                inp_l, hs, zs, h_init, order = caches[l][d]
                dh_ext = dtop[:, d * H : (d + 1) * H]
                d_next = np.zeros(H)             # Wᵀ g(t+1), from the later step
                for i in range(len(order) - 1, -1, -1):
                    t = order[i]
                    h_prev = h_init if i == 0 else hs[order[i - 1]]
                    delta = dh_ext[t] + d_next
                    g = _act_deriv(zs[t], hs[t], nonlinearity) * delta
                    gU += np.outer(g, inp_l[t])
                    gW += np.outer(g, h_prev)
                    gb += g
                    dinp[t] += U.T @ g
                    d_next = W.T @ g
                dstate[l * dirs + d, n] = d_next   # ∂L/∂h0 = Wᵀ g(first)
            dtop = dinp

    loss = None
    if has_target:
        loss = loss_total * scale
    return RefResult(Y, state, loss, grads, dstate)
