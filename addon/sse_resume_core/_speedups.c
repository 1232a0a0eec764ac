/* The relay's per-chunk id reading in C: optional, built by ./dev when a C compiler is at hand.
 *
 * plain_event_id(chunk) does what sse_resume_core._parser.plain_event_id_py does, with the same results
 * (tests compare the two on random chunks). Inside a running mitmdump, each Python operation on a chunk costs
 * several times what it costs in a micro-benchmark (cold caches after mitmproxy's own work); reading the id took
 * about half of the relay's time per event there, and one C call takes a third of that.
 *
 * ABI is the contract with the Python side: _parser.py uses this module only when ABI matches its own number,
 * so a module built from an older source is never used by mistake.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define SPEEDUPS_ABI 1

/* "id: X\ndata: Y\n\n" exactly: LF line ends (no CR anywhere), no NUL in X, no further line. Returns X decoded
 * as UTF-8 (invalid bytes replaced, as the SSE parser does), or None for any other chunk. */
static PyObject *
plain_event_id(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyBytes_CheckExact(arg)) {
        PyErr_SetString(PyExc_TypeError, "plain_event_id() takes bytes");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    /* the shortest such chunk is "id: \ndata:\n\n" (12 bytes) */
    if (n < 12 || memcmp(p, "id: ", 4) != 0 || p[n - 1] != '\n' || p[n - 2] != '\n') {
        Py_RETURN_NONE;
    }
    const char *nl = memchr(p + 4, '\n', (size_t)(n - 4)); /* found: p[n - 2] is one */
    Py_ssize_t end = nl - p;                                /* the id is p[4:end] */
    if (end + 6 > n - 2                                     /* room for "data:" before the last two LFs */
        || memcmp(nl + 1, "data:", 5) != 0
        || memchr(nl + 6, '\n', (size_t)(n - 2 - (end + 6))) != NULL
        || memchr(p, '\r', (size_t)n) != NULL
        || memchr(p + 4, '\0', (size_t)(end - 4)) != NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_DecodeUTF8(p + 4, end - 4, "replace");
}

static PyMethodDef methods[] = {
    {"plain_event_id", plain_event_id, METH_O, "The id of a chunk that is exactly \"id: X\\ndata: Y\\n\\n\", else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups = {
    PyModuleDef_HEAD_INIT, "sse_resume_core._speedups", "The relay's per-chunk id reading, in C.", 0, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *m = PyModule_Create(&speedups);
    if (m != NULL && PyModule_AddIntConstant(m, "ABI", SPEEDUPS_ABI) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
