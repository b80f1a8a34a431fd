/* A downstream extension in plain C that runs an LSTM layer forward and
 * backward through crnn's C header (no Cython): include_dirs =
 * [crnn.get_include()], #include <crnn.h>, crnn_import() in PyInit_.
 *
 * lstm_forward_backward(x, U, W, b, dhs, hs, dU, dW, db, dx, lwork=-1)
 * takes C-contiguous float64 buffers (numpy arrays), time-major:
 *     x (T, B, D), U (4H, D), W (4H, H), b (4H,), dhs (T, B, H)   IN
 *     hs (T+1, B, H), dU, dW, db (accumulated: zero them), dx (T, B, D)  OUT
 * runs crnn_forward_f64 then crnn_backward_f64 on one workspace of lwork
 * elements (-1: the size crnn asks for), and returns the status's name
 * ("CRNN_OK", or the error of the call that failed).  Every sequence has
 * T steps; the initial state is zero. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <crnn.h>

/* A buffer of `ndim` dimensions of doubles, C-contiguous, writable if asked. */
static int get_buffer(PyObject *object, Py_buffer *view, int ndim,
                      int writable, const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(object, view, flags) < 0)
        return -1;
    if (view->ndim != ndim || view->itemsize != sizeof(double)
            || view->format == NULL || view->format[0] != 'd') {
        PyErr_Format(PyExc_ValueError, "%s must be a %d-d C-contiguous float64 "
                     "array", name, ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *lstm_forward_backward(PyObject *self, PyObject *args)
{
    static const char *names[10] = {"x", "U", "W", "b", "dhs", "hs", "dU",
                                    "dW", "db", "dx"};
    static const int dims[10] = {3, 2, 2, 1, 3, 3, 2, 2, 1, 3};
    PyObject *objects[10];
    Py_buffer views[10];
    Py_ssize_t lwork = -1;
    int status = CRNN_OK, got = 0, i;
    crnn_sizes sizes;
    double *work = NULL;
    PyObject *result = NULL;

    if (!PyArg_ParseTuple(args, "OOOOOOOOOO|n", &objects[0], &objects[1],
                          &objects[2], &objects[3], &objects[4], &objects[5],
                          &objects[6], &objects[7], &objects[8], &objects[9],
                          &lwork))
        return NULL;
    for (got = 0; got < 10; got++)
        if (get_buffer(objects[got], &views[got], dims[got], got >= 5,
                       names[got]) < 0)
            goto done;
    sizes.steps = (int) views[0].shape[0];
    sizes.batch = (int) views[0].shape[1];
    sizes.inputs = (int) views[0].shape[2];
    sizes.hidden = (int) views[2].shape[1];
    /* the caller's shapes must agree with the sizes: crnn trusts extents */
    if (views[1].shape[0] != 4 * sizes.hidden || views[1].shape[1] != sizes.inputs
            || views[2].shape[0] != 4 * sizes.hidden
            || views[3].shape[0] != 4 * sizes.hidden
            || views[4].shape[0] != sizes.steps || views[4].shape[1] != sizes.batch
            || views[4].shape[2] != sizes.hidden
            || views[5].shape[0] != sizes.steps + 1
            || views[5].shape[1] != sizes.batch || views[5].shape[2] != sizes.hidden
            || views[6].len != views[1].len || views[7].len != views[2].len
            || views[8].len != views[3].len || views[9].len != views[0].len) {
        PyErr_SetString(PyExc_ValueError, "the arrays' shapes do not agree");
        goto done;
    }
    if (lwork < 0)
        lwork = crnn_sequence_workspace_size(CRNN_LSTM, &sizes, 1);
    if (lwork < 0) {
        PyErr_SetString(PyExc_ValueError, "sizes crnn refuses");
        goto done;
    }
    work = (double *) PyMem_Malloc((size_t) (lwork > 0 ? lwork : 1) * sizeof(double));
    if (work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    status = crnn_forward_f64(CRNN_LSTM, &sizes, NULL, views[0].buf, views[1].buf,
                              views[2].buf, views[3].buf, NULL, NULL, NULL,
                              views[5].buf, NULL, NULL, work, lwork);
    if (status == CRNN_OK)
        status = crnn_backward_f64(CRNN_LSTM, &sizes, views[0].buf, views[1].buf,
                                   views[2].buf, views[5].buf, views[4].buf,
                                   NULL, NULL, views[6].buf, views[7].buf,
                                   views[8].buf, NULL, views[9].buf, NULL, NULL,
                                   work, lwork);
    Py_END_ALLOW_THREADS
    result = PyUnicode_FromString(crnn_status_name(status));
done:
    PyMem_Free(work);
    for (i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    return result;
}

static PyObject *workspace_size(PyObject *self, PyObject *args)
{
    crnn_sizes sizes;
    int backward;
    if (!PyArg_ParseTuple(args, "iiiip", &sizes.steps, &sizes.batch,
                          &sizes.inputs, &sizes.hidden, &backward))
        return NULL;
    return PyLong_FromSsize_t(crnn_sequence_workspace_size(CRNN_LSTM, &sizes,
                                                           backward));
}

static PyMethodDef methods[] = {
    {"lstm_forward_backward", lstm_forward_backward, METH_VARARGS,
     "lstm_forward_backward(x, U, W, b, dhs, hs, dU, dW, db, dx, lwork=-1) -> status name"},
    {"workspace_size", workspace_size, METH_VARARGS,
     "workspace_size(T, B, D, H, backward) -> elements (LSTM)"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "crnn_downstream_c",
    "An LSTM layer forward and backward through crnn's C header.", -1, methods
};

PyMODINIT_FUNC PyInit_crnn_downstream_c(void)
{
    if (crnn_import() < 0)
        return NULL;
    return PyModule_Create(&module);
}
