/* crnn's C-level API for C and C++ extensions (no Cython needed).
 *
 * The same functions as crnn/api.pxd -- crnn's engine, the one its Python
 * models run -- reached through a table of function pointers that the
 * module crnn.api exports as a capsule, the way NumPy's import_array()
 * works.  In one translation unit of the extension, before any other call
 * (typically in its PyInit_ function, with the GIL held):
 *
 *     #include <crnn.h>          // include_dirs=[crnn.get_include()]
 *     if (crnn_import() < 0) return NULL;    // a Python error is set
 *
 * then call crnn_forward_f64(...) and the rest as declared below, from any
 * thread, without the GIL.  The contract -- shapes, layout, the workspace
 * and its length lwork, the status codes -- is written at the top of
 * api.pxd (in the same folder) and in docs/capi.md.
 *
 * Each translation unit that includes this header gets its own copy of the
 * table pointer (static): call crnn_import() in each one that calls crnn.
 */
#ifndef CRNN_H
#define CRNN_H

#include <Python.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CRNN_API_VERSION 2

enum crnn_cell {
    CRNN_RNN_TANH = 0,
    CRNN_RNN_RELU = 1,
    CRNN_LSTM = 2,
    CRNN_GRU = 3,                 /* PyTorch's GRU (with bn, b_hn) */
    CRNN_GRU_RESET_BEFORE = 4,    /* the original GRU, no bn */
    CRNN_LSTM_PEEPHOLE = 5        /* ONNX's LSTM with P (3, H) passed as bn,
                                     dP returned in dbn */
};

enum crnn_status {
    CRNN_OK = 0,
    CRNN_ERROR_CELL = 1,          /* not a crnn_cell */
    CRNN_ERROR_SIZES = 2,         /* a size < 1, or T*B or G*H past INT_MAX */
    CRNN_ERROR_LENGTHS = 3,       /* a length outside [1, T], or not sorted */
    CRNN_ERROR_NULL = 4,          /* a required pointer is NULL */
    CRNN_ERROR_WORKSPACE = 5,     /* backward without its forward in work */
    CRNN_ERROR_WORKSPACE_SIZE = 6 /* lwork below what the call needs */
};

typedef struct crnn_sizes {
    int steps;    /* T */
    int batch;    /* B */
    int inputs;   /* D */
    int hidden;   /* H */
} crnn_sizes;

/* The table, in the order api.pyx fills it. */
typedef struct crnn_api {
    int (*api_version)(void);
    const char *(*status_name)(int status);
    int (*gate_blocks)(int cell);
    Py_ssize_t (*sequence_workspace_size)(int cell, const crnn_sizes *sizes,
                                          int backward);
    Py_ssize_t (*step_workspace_size)(int cell, const crnn_sizes *sizes);
    void (*length_order)(int batch, const int *lengths, int *order);
    int (*forward_f32)(int cell, const crnn_sizes *sizes, const int *lengths,
                       const float *x, const float *U, const float *W,
                       const float *b, const float *bn, const float *h0,
                       const float *c0, float *hs, float *h_n, float *c_n,
                       float *work, Py_ssize_t lwork);
    int (*forward_f64)(int cell, const crnn_sizes *sizes, const int *lengths,
                       const double *x, const double *U, const double *W,
                       const double *b, const double *bn, const double *h0,
                       const double *c0, double *hs, double *h_n, double *c_n,
                       double *work, Py_ssize_t lwork);
    int (*backward_f32)(int cell, const crnn_sizes *sizes, const float *x,
                        const float *U, const float *W, const float *hs,
                        const float *dhs, const float *dh_n, const float *dc_n,
                        float *dU, float *dW, float *db, float *dbn, float *dx,
                        float *dh0, float *dc0, float *work, Py_ssize_t lwork);
    int (*backward_f64)(int cell, const crnn_sizes *sizes, const double *x,
                        const double *U, const double *W, const double *hs,
                        const double *dhs, const double *dh_n,
                        const double *dc_n, double *dU, double *dW, double *db,
                        double *dbn, double *dx, double *dh0, double *dc0,
                        double *work, Py_ssize_t lwork);
    int (*step_f32)(int cell, const crnn_sizes *sizes, const float *x,
                    const float *U, const float *W, const float *b,
                    const float *bn, float *h, float *c, float *work,
                    Py_ssize_t lwork);
    int (*step_f64)(int cell, const crnn_sizes *sizes, const double *x,
                    const double *U, const double *W, const double *b,
                    const double *bn, double *h, double *c, double *work,
                    Py_ssize_t lwork);
} crnn_api;

static const crnn_api *crnn_api_table = NULL;

/* Fetch the table from crnn.api; 0 on success, -1 with a Python error set
 * (crnn missing, or a crnn whose API version differs from this header's). */
static inline int crnn_import(void)
{
    PyObject *module = PyImport_ImportModule("crnn.api");
    PyObject *capsule;
    if (module == NULL)
        return -1;
    capsule = PyObject_GetAttrString(module, "_C_API");
    Py_DECREF(module);
    if (capsule == NULL)
        return -1;
    crnn_api_table = (const crnn_api *) PyCapsule_GetPointer(capsule,
                                                             "crnn.api._C_API");
    Py_DECREF(capsule);   /* the module keeps the capsule (and table) alive */
    if (crnn_api_table == NULL)
        return -1;
    if (crnn_api_table->api_version() != CRNN_API_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "crnn.h is for crnn's C API version %d, the installed crnn "
                     "has version %d: rebuild this extension against it",
                     CRNN_API_VERSION, crnn_api_table->api_version());
        crnn_api_table = NULL;
        return -1;
    }
    return 0;
}

#define crnn_status_name (crnn_api_table->status_name)
#define crnn_gate_blocks (crnn_api_table->gate_blocks)
#define crnn_sequence_workspace_size (crnn_api_table->sequence_workspace_size)
#define crnn_step_workspace_size (crnn_api_table->step_workspace_size)
#define crnn_length_order (crnn_api_table->length_order)
#define crnn_forward_f32 (crnn_api_table->forward_f32)
#define crnn_forward_f64 (crnn_api_table->forward_f64)
#define crnn_backward_f32 (crnn_api_table->backward_f32)
#define crnn_backward_f64 (crnn_api_table->backward_f64)
#define crnn_step_f32 (crnn_api_table->step_f32)
#define crnn_step_f64 (crnn_api_table->step_f64)

#ifdef __cplusplus
}
#endif

#endif /* CRNN_H */
