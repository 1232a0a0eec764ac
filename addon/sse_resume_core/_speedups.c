/* The relay's per-chunk id reading in C: an optional extension (declared in setup.py), built on install where a
 * C compiler is at hand, written to the limited API (one abi3 build serves every CPython from 3.12 on).
 *
 * single_event_id(chunk) implements the contract of sse_resume_core._parser.single_event_id_py, with the same
 * results: that function is the fallback where this module is not built, and the oracle the tests hold this one
 * to (on the hand-written cases and on random chunks; both are also held to the general parser). Inside a running
 * mitmdump each Python operation on a chunk costs several times what it costs in a micro-benchmark (cold caches
 * after mitmproxy's own work): reading the id in Python was about half of the relay's time per event there.
 *
 * ABI is the contract with the Python side: _parser.py uses this module only when ABI matches its own number,
 * so a module built from an older source is never used by mistake.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define SPEEDUPS_ABI 2

/* One line's meaning, for the contract below. */
static int
starts_with(const char *line, Py_ssize_t len, const char *prefix, Py_ssize_t plen)
{
    return len >= plen && memcmp(line, prefix, (size_t)plen) == 0;
}

static int
is(const char *line, Py_ssize_t len, const char *word, Py_ssize_t wlen)
{
    return len == wlen && memcmp(line, word, (size_t)wlen) == 0;
}

/* The id of `chunk` when it is exactly one event block of the plain kind: LF line ends throughout or CRLF
 * throughout (no lone CR, no mixing); lines that are only "id", "event" and "data" fields in any order (one
 * "data" line at least; a field name with no colon counts); then exactly one empty line. No other line, and no
 * id containing NUL. Several ids: the last one counts. Returns the id decoded as UTF-8 (invalid bytes replaced,
 * as the SSE parser does), None for such an event without an id, False for any other chunk. */
static PyObject *
single_event_id(PyObject *module, PyObject *arg)
{
    (void)module;
    char *p;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &p, &n) < 0) { /* (a TypeError for anything but bytes) */
        return NULL;
    }
    /* CRLF throughout where there is a CR at all: then each line ends with a CR before its LF, and has no other. */
    const int crlf = memchr(p, '\r', (size_t)n) != NULL;
    if (n < 2 || p[n - 1] != '\n') {
        Py_RETURN_FALSE;
    }
    const char *id = NULL;
    Py_ssize_t id_len = 0;
    int dispatches = 0;
    Py_ssize_t start = 0;
    for (;;) { /* one pass per line: bounded by the number of LFs in the chunk, as p[n - 1] is the last */
        const char *line = p + start;
        const Py_ssize_t end = (const char *)memchr(line, '\n', (size_t)(n - start)) - p; /* this line's LF */
        Py_ssize_t len = end - start;
        if (crlf) {
            if (len == 0 || p[end - 1] != '\r' || memchr(line, '\r', (size_t)(len - 1)) != NULL) {
                Py_RETURN_FALSE; /* a lone LF, or a lone CR */
            }
            len--;
        }
        if (end == n - 1) { /* the last line: the empty one that ends the event, after one field line at least */
            if (len != 0 || start == 0) {
                Py_RETURN_FALSE;
            }
            break;
        }
        if (starts_with(line, len, "data:", 5) || is(line, len, "data", 4)) {
            dispatches = 1;
        }
        else if (starts_with(line, len, "id:", 3)) {
            Py_ssize_t skip = len > 3 && line[3] == ' ' ? 4 : 3;
            id = line + skip;
            id_len = len - skip;
            if (memchr(id, '\0', (size_t)id_len) != NULL) { /* ignored by the spec: the parser decides */
                Py_RETURN_FALSE;
            }
        }
        else if (starts_with(line, len, "event:", 6) || is(line, len, "event", 5)) {
        }
        else if (is(line, len, "id", 2)) {
            id = line;
            id_len = 0;
        }
        else { /* an empty line (two blocks), a comment, retry, another field, a BOM... */
            Py_RETURN_FALSE;
        }
        start = end + 1;
    }
    if (!dispatches) {
        Py_RETURN_FALSE;
    }
    if (id == NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_DecodeUTF8(id, id_len, "replace");
}

static PyMethodDef methods[] = {
    {"single_event_id", single_event_id, METH_O,
     "The id of a chunk that is exactly one plain event (None: it has none), else False."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sse_resume_core._speedups",
    .m_doc = "The relay's per-chunk id reading, in C.",
    .m_size = 0,
    .m_methods = methods,
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
