/* The relay's per-chunk id reading in C: an optional extension (declared in setup.py), built on install where a
 * C compiler is at hand, written to the limited API (one abi3 build serves every CPython from 3.12 on).
 *
 * single_event_id(chunk) and whole_events(chunk) implement the contracts of sse_resume_core._parser's
 * single_event_id_py and whole_events_py, with the same results, through one reader of a plain event (read_event,
 * as the Python ones share single_event_id_py): those functions are the fallback where this module is not built,
 * and the oracle the tests hold these to (on the hand-written cases and on random chunks; both are also held to the general parser). Inside a running
 * mitmdump each Python operation on a chunk costs several times what it costs in a micro-benchmark (cold caches
 * after mitmproxy's own work): reading the id in Python was about half of the relay's time per event there.
 *
 * ABI is the contract with the Python side: _parser.py uses this module only when ABI matches its own number,
 * so a module built from an older source is never used by mistake.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define SPEEDUPS_ABI 3

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

/* Whether p[0:n] is exactly one event block of the plain kind: LF line ends throughout or CRLF throughout (no lone
 * CR, no mixing); lines that are only "id", "event" and "data" fields in any order (one "data" line at least; a
 * field name with no colon counts); then exactly one empty line. No other line, and no id containing NUL. Several
 * ids: the last one counts, and is left in *id, *id_len (*id NULL: the event has none). Returns 1 or 0. */
static int
read_event(const char *p, Py_ssize_t n, const char **id, Py_ssize_t *id_len)
{
    /* CRLF throughout where there is a CR at all: then each line ends with a CR before its LF, and has no other. */
    const int crlf = memchr(p, '\r', (size_t)n) != NULL;
    *id = NULL;
    *id_len = 0;
    if (n < 2 || p[n - 1] != '\n') {
        return 0;
    }
    int dispatches = 0;
    Py_ssize_t start = 0;
    for (;;) { /* one pass per line: bounded by the number of LFs in the block, as p[n - 1] is the last */
        const char *line = p + start;
        const Py_ssize_t end = (const char *)memchr(line, '\n', (size_t)(n - start)) - p; /* this line's LF */
        Py_ssize_t len = end - start;
        if (crlf) {
            if (len == 0 || p[end - 1] != '\r' || memchr(line, '\r', (size_t)(len - 1)) != NULL) {
                return 0; /* a lone LF, or a lone CR */
            }
            len--;
        }
        if (end == n - 1) { /* the last line: the empty one that ends the event, after one field line at least */
            if (len != 0 || start == 0) {
                return 0;
            }
            break;
        }
        if (starts_with(line, len, "data:", 5) || is(line, len, "data", 4)) {
            dispatches = 1;
        }
        else if (starts_with(line, len, "id:", 3)) {
            Py_ssize_t skip = len > 3 && line[3] == ' ' ? 4 : 3;
            *id = line + skip;
            *id_len = len - skip;
            if (memchr(*id, '\0', (size_t)*id_len) != NULL) { /* ignored by the spec: the parser decides */
                return 0;
            }
        }
        else if (starts_with(line, len, "event:", 6) || is(line, len, "event", 5)) {
        }
        else if (is(line, len, "id", 2)) {
            *id = line;
            *id_len = 0;
        }
        else { /* an empty line (two blocks), a comment, retry, another field, a BOM... */
            return 0;
        }
        start = end + 1;
    }
    return dispatches;
}

/* An event's id as Python sees it: decoded as UTF-8 (invalid bytes replaced, as the SSE parser does), or None. */
static PyObject *
id_object(const char *id, Py_ssize_t id_len)
{
    if (id == NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_DecodeUTF8(id, id_len, "replace");
}

/* single_event_id_py's contract: the id of `chunk` when it is one plain event (see read_event), None for such an
 * event without an id, False for any other chunk. */
static PyObject *
single_event_id(PyObject *module, PyObject *arg)
{
    (void)module;
    char *p;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &p, &n) < 0) { /* (a TypeError for anything but bytes) */
        return NULL;
    }
    const char *id;
    Py_ssize_t id_len;
    if (!read_event(p, n, &id, &id_len)) {
        Py_RETURN_FALSE;
    }
    return id_object(id, id_len);
}

/* The end of the first empty line at or after `from` (terminator "\n\n", or "\r\n\r\n" with `crlf`): the offset
 * just past it, or -1. */
static Py_ssize_t
next_end(const char *p, Py_ssize_t n, Py_ssize_t from, int crlf)
{
    const Py_ssize_t tail = crlf ? 3 : 1; /* bytes of the terminator before its last LF */
    Py_ssize_t i = from + tail;
    while (i < n) {
        const char *lf = memchr(p + i, '\n', (size_t)(n - i));
        if (lf == NULL) {
            return -1;
        }
        i = lf - p;
        if (crlf ? (p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r') : p[i - 1] == '\n') {
            return i + 1;
        }
        i++;
    }
    return -1;
}

/* whole_events_py's contract: `chunk` cut after each empty line ("\n\n", or "\r\n\r\n" where it holds a CR),
 * each piece one plain event (see read_event): (their bytes, their ids), else None. */
static PyObject *
whole_events(PyObject *module, PyObject *arg)
{
    (void)module;
    char *p;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &p, &n) < 0) {
        return NULL;
    }
    const int crlf = memchr(p, '\r', (size_t)n) != NULL;
    PyObject *raws = PyList_New(0);
    PyObject *ids = PyList_New(0);
    if (raws == NULL || ids == NULL) {
        goto error;
    }
    Py_ssize_t start = 0;
    while (start < n) {
        const Py_ssize_t end = next_end(p, n, start, crlf);
        const char *id;
        Py_ssize_t id_len;
        if (end < 0 || !read_event(p + start, end - start, &id, &id_len)) {
            Py_DECREF(raws);
            Py_DECREF(ids);
            Py_RETURN_NONE;
        }
        PyObject *raw;
        if (start == 0 && end == n) { /* one event: the chunk itself */
            Py_INCREF(arg);
            raw = arg;
        }
        else {
            raw = PyBytes_FromStringAndSize(p + start, end - start);
        }
        if (raw == NULL || PyList_Append(raws, raw) < 0) {
            Py_XDECREF(raw);
            goto error;
        }
        Py_DECREF(raw);
        PyObject *value = id_object(id, id_len);
        if (value == NULL || PyList_Append(ids, value) < 0) {
            Py_XDECREF(value);
            goto error;
        }
        Py_DECREF(value);
        start = end;
    }
    if (PyList_Size(raws) == 0) {
        Py_DECREF(raws);
        Py_DECREF(ids);
        Py_RETURN_NONE;
    }
    return Py_BuildValue("(NN)", raws, ids);
error:
    Py_XDECREF(raws);
    Py_XDECREF(ids);
    return NULL;
}

static PyMethodDef methods[] = {
    {"single_event_id", single_event_id, METH_O,
     "The id of a chunk that is exactly one plain event (None: it has none), else False."},
    {"whole_events", whole_events, METH_O,
     "A chunk of one or more plain events: (their bytes, their ids), else None."},
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
