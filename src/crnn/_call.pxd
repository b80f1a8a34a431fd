# One call of the network and the workspace its buffers come from
# (_call.pyx); the network's stages (_network.pyx) read and fill a call.
cimport numpy as cnp

from ._plan cimport LanePlan


cdef class Workspace:
    cdef readonly dict buffers   # name -> its array (tests fill them to check
                                 # that no result reads what no call wrote)
    cdef dict views     # (name, shape, dtype) -> view of buffers[name]
    cdef readonly unsigned long long calls   # NetworkCalls made on it

    cpdef cnp.ndarray get(self, str name, tuple shape, object dtype)


cdef class NetworkCall:
    cdef readonly Workspace ws
    cdef int kind, H, S, num_layers, directions, n_lanes, T, B, K, Hd
    cdef int output_kind, typenum, paths
    cdef bint return_sequences, need_grad, with_c, separate, with_bn, with_p
    cdef bint with_loss, want_dx    # the loss and ∂L/∂O; BPTT's ∂L/∂X
    # ws.calls when made: BPTT may read the buffers while they are equal
    cdef readonly unsigned long long generation
    cdef bint use_panels, outputs_in_step
    cdef double scale, loss
    cdef list lanes
    cdef object V, c, h0, c0, targets, dtype
    cdef cnp.ndarray inputs, lengths, batch_array
    cdef const int *lens
    cdef const int *batch_sizes
    # left by the forward for BPTT
    cdef list lane_inputs, lane_gates, lane_hs, lane_cs, lane_keep, lane_ms
    cdef list layer_outputs     # (T, B, H·dirs) per layer
    cdef object h_n, c_n, outputs, top_h, dlogits
    # BPTT's: ∂L/∂h0 (∂L/∂c0), and zeros for the top lane's step product
    cdef object dh0, dc0, zeros
    # backward's: ∂L/∂h_n (lanes, B, S), ∂L/∂c_n (lanes, B, H) or None;
    # ∂L/∂X (T, B, D)
    cdef object dh_n, dc_n, dinputs
    cdef cnp.npy_intp state_dims[3]     # h's (lanes, B, S)
    cdef cnp.npy_intp cell_dims[3]      # C's (lanes, B, H)
    # dropout's masks (training only): run's `masks`, applied by _dropout.pxd
    cdef list input_masks, recurrent_masks
    cdef object output_mask

    cdef void setup(self, Workspace ws, int kind, int H, int num_layers,
                    int directions, list lanes, cnp.ndarray inputs,
                    cnp.ndarray lengths) except *
    cdef object peepholes(self, int lane)
    cdef object projection(self, int lane)
    cdef void plan(self, LanePlan *plan, int layer, bint tokens) noexcept
