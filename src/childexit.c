/*
 * childexit.c: how a Python child ends: its exit status for a pending
 * SystemExit, following Python's own rules, and the flush of sys.stdout and
 * sys.stderr before it leaves.
 */
#include "pyclone.h"

void
pyclone_flush_std_streams(void)
{
    static const char *names[] = {"stdout", "stderr"};
    for (size_t i = 0; i < 2; i++) {
        PyObject *f = PySys_GetObject(names[i]); /* borrowed */
        if (f != NULL && f != Py_None) {
            PyObject *r = PyObject_CallMethod(f, "flush", NULL);
            if (r == NULL) {
                PyErr_Clear();
            }
            Py_XDECREF(r);
        }
    }
}

/* Exit status for a pending SystemExit, following Python's own rules:
 * None -> 0, int -> int, anything else printed to stderr -> 1. */
int
pyclone_system_exit_status(void)
{
    PyObject *type, *tb;
    PyObject *value = pyclone_fetch_exception(&type, &tb);
    int status = 1;
    PyObject *code = value ? PyObject_GetAttrString(value, "code") : NULL;
    if (code == NULL) {
        PyErr_Clear();
    }
    else if (code == Py_None) {
        status = 0;
    }
    else if (PyLong_Check(code)) {
        int overflow = 0;
        long v = PyLong_AsLongAndOverflow(code, &overflow);
        status = (v == -1 && PyErr_Occurred()) || overflow ? 1 : (int)v;
        PyErr_Clear();
    }
    else {
        PyObject *s = PyObject_Str(code);
        if (s != NULL) {
            const char *text = PyUnicode_AsUTF8(s);
            if (text != NULL) {
                PySys_WriteStderr("%s\n", text);
            }
        }
        Py_XDECREF(s);
        PyErr_Clear();
    }
    Py_XDECREF(code);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return status;
}
