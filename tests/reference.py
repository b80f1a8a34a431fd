"""Plain numpy float64 RNN, LSTM and GRU, written straight from MODEL.md.

This is the oracle the crnn tests compare against. It is deliberately naive:
one sequence at a time, one time step at a time, no batching, no hoisting, no
sorting by length, so that every line can be read against the formulas of
MODEL.md (parts 1 and 2, "Conventions") and PyTorch's GRU equations.

Output layer and loss, the same for every cell:

    o(t) = V h(t) + c,  ŷ(t) = softmax(o(t)),  L(t) = -log ŷ(t)[y(t)]
    (linear output: ŷ(t) = o(t),  L(t) = ½‖o(t) - y(t)‖²)

One step of each cell (``_step_forward``), and its BPTT step
(``_step_backward``: from the whole gradient reaching the new state to the
gradient reaching the previous state, the input and the parameters):

    rnn   z = U x + W h(t-1) + b,  h = tanh(z) (or relu)
          g = act'(z) ⊙ dh;  ∂U += g xᵀ, ∂W += g h(t-1)ᵀ, ∂b += g,
          dx = Uᵀ g, dh(t-1) = Wᵀ g
    lstm  z = U x + W h(t-1) + b  (4H: blocks i, f, a, o)
          i, f, o = σ(z_i, z_f, z_o),  a = tanh(z_a)
          C = f ⊙ C(t-1) + i ⊙ a,  h = o ⊙ tanh(C)
          dC = dh ⊙ o ⊙ (1 - tanh(C)²) + dC(t+1 → t)   (the later step's dC ⊙ f)
          dz_o = dh ⊙ tanh(C) ⊙ o(1 - o),  dz_i = dC ⊙ a ⊙ i(1 - i),
          dz_f = dC ⊙ C(t-1) ⊙ f(1 - f),  dz_a = dC ⊙ i ⊙ (1 - a²)
          dh(t-1) = Wᵀ dz,  dC(t-1) = dC ⊙ f,  dx = Uᵀ dz
          with peepholes (params P{l}, rows P_i, P_o, P_f: ONNX's order):
          i = σ(z_i + P_i ⊙ C(t-1)), f = σ(z_f + P_f ⊙ C(t-1)),
          o = σ(z_o + P_o ⊙ C);  dC gets dz_o ⊙ P_o, dC(t-1) gets
          dz_i ⊙ P_i + dz_f ⊙ P_f;  ∂P_i += dz_i ⊙ C(t-1),
          ∂P_o += dz_o ⊙ C,  ∂P_f += dz_f ⊙ C(t-1)
          with a projection (params R{l} (P, H), PyTorch's proj_size):
          m = o ⊙ tanh(C), h = R m;  dm = Rᵀ dh, ∂R += dh mᵀ, then the
          lstm's backward with dm in dh's place (W is (4H, P), h0 (P,))
    gru   (3H: blocks r, z, n; bn is PyTorch's b_hn)
          r = σ(U_r x + W_r h(t-1) + b_r),  z = σ(U_z x + W_z h(t-1) + b_z)
          q = W_n h(t-1) + bn,  n = tanh(U_n x + b_n + r ⊙ q)
          h = (1 - z) ⊙ n + z ⊙ h(t-1)
          dn = dh ⊙ (1 - z),  dz = dh ⊙ (h(t-1) - n),  da_n = dn ⊙ (1 - n²)
          dq = da_n ⊙ r,  da_r = da_n ⊙ q ⊙ r(1 - r),  da_z = dz ⊙ z(1 - z)
          ∂U += [da_r, da_z, da_n] xᵀ,  ∂b += [da_r, da_z, da_n]
          ∂W += [da_r, da_z, dq] h(t-1)ᵀ,  ∂bn += dq
          dh(t-1) = dh ⊙ z + W_rᵀ da_r + W_zᵀ da_z + W_nᵀ dq,
          dx = Uᵀ [da_r, da_z, da_n]
          without bn (GRU(reset_after=False)): k = r ⊙ h(t-1),
          n = tanh(U_n x + b_n + W_n k);  dk = W_nᵀ da_n,
          da_r = dk ⊙ h(t-1) ⊙ r(1 - r),  ∂W_n += da_n kᵀ,
          dh(t-1) = dh ⊙ z + W_rᵀ da_r + W_zᵀ da_z + dk ⊙ r
          (recurrent dropout: h̃(t-1) in the products and in k, h(t-1) in
          the blend; the products' term of dh(t-1) is multiplied by the mask)

Layer l > 0 reads [h_fwd(t), h_rev(t)] of layer l-1. The reverse direction runs
over each sequence reversed within its own length: its "first" position is the
sequence's last real position and its final state is the one at position 0.
States are laid out like PyTorch: index l * dirs + d; an LSTM's state (and
initial state, and initial-state gradient) is a pair (h, c).

Only this module and ``torch_helper`` are helpers; neither imports crnn.
"""

import numpy as np

__all__ = ["RefResult", "reference", "rnn_reference", "to_padded", "pad_targets",
           "param_shapes", "gate_blocks", "CELLS"]

CELLS = ("rnn", "lstm", "gru")


class RefResult:
    """What one reference call produces.

    Y       (N, T, K) / (N, K) outputs (probabilities, values or top-layer h),
            zero rows past a sequence's length
    state   (num_layers * dirs, N, H) final h of each sequence and layer/direction
            (LSTM: the pair (h, c))
    loss    float (None when there is no target)
    grads   dict like the params (None when there is no target)
    dstate  (num_layers * dirs, N, H) gradient w.r.t. the initial state
            (LSTM: the pair (dh0, dc0))
    """

    def __init__(self, Y, state, loss, grads, dstate):
        self.Y = Y
        self.state = state
        self.loss = loss
        self.grads = grads
        self.dstate = dstate


def _suffix(d):
    return "" if d == 0 else "_reverse"


def gate_blocks(cell):
    """G: U, W and b have G·H rows."""
    return {"rnn": 1, "lstm": 4, "gru": 3}[cell]


def param_shapes(input_size, hidden_size, output_size, num_layers=1,
                 bidirectional=False, output="softmax", cell="rnn",
                 peepholes=False, proj_size=0):
    """The shapes of the params dict of API.md (G = 1, 4, 3 for rnn, lstm,
    gru; P{l} (3, H) for an lstm with peepholes, R{l} (proj_size, H) with a
    projection)."""
    dirs = 2 if bidirectional else 1
    G = gate_blocks(cell)
    width = proj_size or hidden_size        # h's
    shapes = {}
    for l in range(num_layers):
        d_in = input_size if l == 0 else width * dirs
        for d in range(dirs):
            s = _suffix(d)
            shapes[f"U{l}{s}"] = (G * hidden_size, d_in)
            shapes[f"W{l}{s}"] = (G * hidden_size, width)
            shapes[f"b{l}{s}"] = (G * hidden_size,)
            if cell == "gru":
                shapes[f"bn{l}{s}"] = (hidden_size,)
            if peepholes:
                shapes[f"P{l}{s}"] = (3, hidden_size)
            if proj_size:
                shapes[f"R{l}{s}"] = (proj_size, hidden_size)
    if output is not None:
        shapes["V"] = (output_size, width * dirs)
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


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(o):
    e = np.exp(o - o.max())
    return e / e.sum()


# ---------------------------------------------------------------- one cell step
#
# A state is a tuple: (h,) for rnn and gru, (h, C) for lstm. ``lane`` holds one
# layer-direction's parameters: U, W, b (and bn for gru, P for an lstm with
# peepholes; without P the lstm's peepholes are zero).

def _step_forward(cell, lane, x, state, nonlinearity, rmask=1.0):
    """One position: the new state and what the backward step needs.
    ``rmask``: recurrent dropout's mask (0 or 1/(1-p) per unit) on h(t-1)
    inside W h(t-1) only; 1.0 without dropout."""
    U, W, b = lane["U"], lane["W"], lane["b"]
    h_prev = state[0]
    hd = h_prev * rmask                     # h̃(t-1), what W multiplies
    if cell == "rnn":
        z = U @ x + W @ hd + b
        h = _act(z, nonlinearity)
        return (h,), (x, hd, z, h)
    H = h_prev.shape[0]
    if cell == "lstm":
        C_prev = state[1]
        H = C_prev.shape[0]                  # the cell's width (h's is P with R)
        Pi, Po, Pf = lane.get("P", np.zeros((3, H)))
        z = U @ x + W @ hd + b
        i = _sigmoid(z[0:H] + Pi * C_prev)
        f = _sigmoid(z[H:2 * H] + Pf * C_prev)
        a = np.tanh(z[2 * H:3 * H])
        C = f * C_prev + i * a
        o = _sigmoid(z[3 * H:4 * H] + Po * C)
        tc = np.tanh(C)
        m = o * tc
        h = lane["R"] @ m if "R" in lane else m
        return (h, C), (x, hd, C_prev, i, f, a, o, C, tc)
    if cell == "gru" and "bn" not in lane:
        # reset before the product (GRU(reset_after=False), no bn):
        # n = tanh(U_n x + b_n + W_n (r ⊙ h̃(t-1)))
        ux = U @ x + b
        r = _sigmoid(ux[0:H] + W[0:H] @ hd)
        zg = _sigmoid(ux[H:2 * H] + W[H:2 * H] @ hd)
        keep = r * hd
        n = np.tanh(ux[2 * H:3 * H] + W[2 * H:3 * H] @ keep)
        h = (1.0 - zg) * n + zg * h_prev
        return (h,), (x, h_prev, hd, r, zg, keep, n)
    if cell == "gru":
        bn = lane["bn"]
        ux = U @ x + b                       # input part of all three blocks
        wh = W @ hd                          # recurrent part of all three blocks
        r = _sigmoid(ux[0:H] + wh[0:H])
        zg = _sigmoid(ux[H:2 * H] + wh[H:2 * H])
        q = wh[2 * H:3 * H] + bn             # W_n h(t-1) + b_hn
        n = np.tanh(ux[2 * H:3 * H] + r * q)
        h = (1.0 - zg) * n + zg * h_prev
        return (h,), (x, h_prev, hd, r, zg, q, n)
    raise ValueError(cell)


def _step_backward(cell, lane, glane, cache, dstate, nonlinearity, rmask=1.0):
    """BPTT through one position.

    ``dstate`` is the whole gradient reaching this position's new state (dh,
    and dC for lstm). Adds the parameter gradients into ``glane`` and returns
    (gradient reaching the previous state, gradient reaching x).  The cache
    holds h̃(t-1) = h(t-1) ⊙ rmask where W multiplies it; the recurrent
    term of dh(t-1) is (Wᵀ dz) ⊙ rmask.
    """
    U, W = lane["U"], lane["W"]
    dh = dstate[0]
    if cell == "rnn":
        x, h_prev, z, h = cache
        g = _act_deriv(z, h, nonlinearity) * dh
        glane["U"] += np.outer(g, x)
        glane["W"] += np.outer(g, h_prev)
        glane["b"] += g
        return ((W.T @ g) * rmask,), U.T @ g
    if cell == "lstm":
        x, h_prev, C_prev, i, f, a, o, C, tc = cache
        Pi, Po, Pf = lane.get("P", np.zeros((3, len(C))))
        if "R" in lane:                      # h = R m: dm = Rᵀ dh, ∂R += dh mᵀ
            glane["R"] += np.outer(dh, o * tc)
            dh = lane["R"].T @ dh
        dz_o = dh * tc * o * (1.0 - o)
        dC = dh * o * (1.0 - tc * tc) + dstate[1] + dz_o * Po
        dz_i = dC * a * i * (1.0 - i)
        dz_f = dC * C_prev * f * (1.0 - f)
        dz = np.concatenate([dz_i, dz_f, dC * i * (1.0 - a * a), dz_o])
        glane["U"] += np.outer(dz, x)
        glane["W"] += np.outer(dz, h_prev)
        glane["b"] += dz
        if "P" in glane:
            glane["P"] += np.stack([dz_i * C_prev, dz_o * C, dz_f * C_prev])
        return ((W.T @ dz) * rmask, dC * f + dz_i * Pi + dz_f * Pf), U.T @ dz
    if cell == "gru" and "bn" not in lane:
        x, h_prev, hd, r, zg, keep, n = cache
        H = h_prev.shape[0]
        dn = dh * (1.0 - zg)
        dzg = dh * (h_prev - n)
        dan = dn * (1.0 - n * n)
        dkeep = W[2 * H:3 * H].T @ dan          # at r ⊙ h̃(t-1)
        dar = dkeep * hd * r * (1.0 - r)
        daz = dzg * zg * (1.0 - zg)
        d_in = np.concatenate([dar, daz, dan])
        glane["U"] += np.outer(d_in, x)
        glane["b"] += d_in
        glane["W"][:2 * H] += np.outer(d_in[:2 * H], hd)
        glane["W"][2 * H:] += np.outer(dan, keep)
        dh_tilde = W[:2 * H].T @ d_in[:2 * H] + dkeep * r    # at h̃(t-1)
        return (dh * zg + dh_tilde * rmask,), U.T @ d_in
    if cell == "gru":
        x, h_prev, hd, r, zg, q, n = cache
        H = h_prev.shape[0]
        dn = dh * (1.0 - zg)
        dzg = dh * (h_prev - n)
        dan = dn * (1.0 - n * n)             # at n's pre-activation
        dq = dan * r                         # at W_n h(t-1) + bn
        dar = dan * q * r * (1.0 - r)
        daz = dzg * zg * (1.0 - zg)
        d_in = np.concatenate([dar, daz, dan])     # at U x + b
        d_rec = np.concatenate([dar, daz, dq])     # at W h(t-1) (+ bn for n)
        glane["U"] += np.outer(d_in, x)
        glane["b"] += d_in
        glane["W"] += np.outer(d_rec, hd)
        glane["bn"] += dq
        dh_prev = dh * zg + (W.T @ d_rec) * rmask
        assert dh_prev.shape == (H,)
        return (dh_prev,), U.T @ d_in
    raise ValueError(cell)


def _state_arrays(cell, initial_state, shape, cell_width):
    """The initial state as a list of float64 arrays (h0[, c0]); c0 is
    `cell_width` wide (h0 is narrower with a projection)."""
    if initial_state is None:
        if cell != "lstm":
            return [np.zeros(shape)]
        return [np.zeros(shape), np.zeros(shape[:2] + (cell_width,))]
    if cell == "lstm":
        h0, c0 = initial_state
        return [np.asarray(h0, dtype=np.float64), np.asarray(c0, dtype=np.float64)]
    return [np.asarray(initial_state, dtype=np.float64)]


def reference(params, X, y=None, lengths=None, initial_state=None, *, cell="rnn",
              num_layers=1, bidirectional=False, nonlinearity="tanh",
              output="softmax", return_sequences=True, reduction="mean",
              masks=None):
    """Forward (and, when ``y`` is given, BPTT) of an RNN, LSTM or GRU in float64.

    ``params`` uses crnn's keys (U{l}, W{l}, b{l}, bn{l} (gru), P{l} (an
    lstm with peepholes), ..._reverse, V, c).
    ``nonlinearity`` only matters for cell="rnn". ``initial_state`` is h0, or
    (h0, c0) for an LSTM. ``masks``: dropout's masks as
    ``crnn._dropout.draw_masks`` gives them (inputs per layer (N, D_l),
    recurrent per lane (N, H), output (N, H·dirs); None entries keep
    everything), or None. Returns a :class:`RefResult`.
    """
    if cell not in CELLS:
        raise ValueError(cell)
    P = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    dirs = 2 if bidirectional else 1
    H = P["W0"].shape[1]                     # h's width (P with a projection)
    cell_width = P["U0"].shape[0] // gate_blocks(cell)
    D = P["U0"].shape[1]
    X, lengths = to_padded(X, lengths, D)
    N, T = X.shape[:2]
    S0 = _state_arrays(cell, initial_state, (num_layers * dirs, N, H), cell_width)
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
        dS0 = [np.zeros_like(s) for s in S0]
        loss_total = 0.0
    else:
        grads = dS0 = None
        loss_total = None

    Y = np.zeros((N, T, K)) if return_sequences else np.zeros((N, K))
    S_final = [np.zeros(s.shape) for s in S0]

    in_masks, rec_masks, out_mask = masks if masks is not None else (
        [None] * num_layers, [None] * (num_layers * dirs), None)

    def row(mask, n):
        return 1.0 if mask is None else np.asarray(mask[n], dtype=np.float64)

    def lane_of(store, l, d):
        s = _suffix(d)
        names = ("U", "W", "b")
        # bn: a GRU with reset_after (none reset before the product)
        names += tuple(name for name in ("bn", "P", "R") if f"{name}0" in P)
        return {name: store[f"{name}{l}{s}"] for name in names}

    for n in range(N):
        Tn = int(lengths[n])
        inp = X[n, :Tn]                      # (Tn, D_l)
        caches = []
        # ---------------- forward, layer by layer, direction by direction
        for l in range(num_layers):
            outs = []
            layer_cache = []
            inp = inp * row(in_masks[l], n)      # x̃(t) = x(t) ⊙ m_x
            for d in range(dirs):
                lane = lane_of(P, l, d)
                state = tuple(s[l * dirs + d, n] for s in S0)
                hs = np.zeros((Tn, H))
                step_caches = {}
                order = list(range(Tn)) if d == 0 else list(range(Tn - 1, -1, -1))
                for t in order:
                    state, step_caches[t] = _step_forward(
                        cell, lane, inp[t], state, nonlinearity,
                        row(rec_masks[l * dirs + d], n))
                    hs[t] = state[0]
                # forward: the state at Tn-1; reverse: the state at position 0
                for s_final, s in zip(S_final, state):
                    s_final[l * dirs + d, n] = s
                outs.append(hs)
                layer_cache.append((inp, step_caches, order))
            caches.append(layer_cache)
            inp = np.concatenate(outs, axis=1)   # (Tn, H * dirs)
        top = inp
        if return_sequences:
            feats = top                          # (Tn, F)
        else:
            # the top layer's final h: PyTorch's h_n[-2], h_n[-1]
            feat = top[Tn - 1, :H]
            if dirs == 2:
                feat = np.concatenate([feat, top[0, H:]])
            feats = feat[None, :]                # (1, F)
        feats = feats * row(out_mask, n)         # h_top ⊙ m_o before V

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
        dfeats = (dO @ V) * row(out_mask, n)     # Vᵀ (ŷ - y) ⊙ m_o, as rows
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
                lane = lane_of(P, l, d)
                glane = lane_of(grads, l, d)     # views into grads: += accumulates
                inp_l, step_caches, order = caches[l][d]
                dh_ext = dtop[:, d * H : (d + 1) * H]
                # gradient reaching the state from the later step (none after the last)
                d_next = tuple(np.zeros(s.shape[2]) for s in S0)
                for t in reversed(order):
                    dstate = (dh_ext[t] + d_next[0],) + d_next[1:]
                    d_next, dx = _step_backward(cell, lane, glane, step_caches[t], dstate,
                                                nonlinearity, row(rec_masks[l * dirs + d], n))
                    dinp[t] += dx
                # ∂L/∂h0 (and ∂L/∂c0): what reaches the state before the first step
                for ds, dv in zip(dS0, d_next):
                    ds[l * dirs + d, n] = dv
            dtop = dinp * row(in_masks[l], n)    # ∂L/∂x = ∂L/∂x̃ ⊙ m_x

    loss = None
    if has_target:
        loss = loss_total * scale
    if cell == "lstm":
        state_out = (S_final[0], S_final[1])
        dstate_out = None if dS0 is None else (dS0[0], dS0[1])
    else:
        state_out = S_final[0]
        dstate_out = None if dS0 is None else dS0[0]
    return RefResult(Y, state_out, loss, grads, dstate_out)


def rnn_reference(params, X, y=None, lengths=None, initial_state=None, *, cell="rnn",
                  **kwargs):
    """The vanilla RNN (cell="rnn" unless told otherwise): see :func:`reference`."""
    return reference(params, X, y, lengths, initial_state, cell=cell, **kwargs)


def central_differences(loss, array, indices=None, step=1e-6):
    """(loss() with array[i] + step  -  loss() with array[i] - step) / 2·step
    for each index i of `array` (every entry when `indices` is None; then
    shaped like `array`), perturbing `array` in place and restoring it
    exactly."""
    every = indices is None
    if every:
        indices = list(np.ndindex(array.shape))
    numeric = np.empty(len(indices))
    for j, i in enumerate(indices):
        saved = array[i]
        array[i] = saved + step
        up = loss()
        array[i] = saved - step
        down = loss()
        array[i] = saved
        numeric[j] = (up - down) / (2 * step)
    return numeric.reshape(array.shape) if every else numeric
