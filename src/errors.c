/*
 * errors.c: how failures become Python exceptions: UnsupportedFlags for a
 * request pyclone refuses, and OSError (through the package's error hook,
 * which names the kernel rule) for a clone the kernel rejected.
 */
#include "pyclone.h"

const char *
pyclone_api_name(enum api_kind api)
{
    return api == API_CLONE ? "clone" : "clone3";
}

PyObject *
pyclone_raise_unsupported(PyObject *module, const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    if (msg != NULL) {
        PyErr_SetObject(pyclone_state(module)->UnsupportedFlags, msg);
        Py_DECREF(msg);
    }
    return NULL;
}

/* Raise OSError(err) for a failed syscall, through the Python error hook
 * when the package installed one (it names the kernel rule). */
PyObject *
pyclone_raise_clone_error(PyObject *module, int err, const clone_request *req)
{
    module_state *st = pyclone_state(module);
    unsigned long long word = req->flags;
    if (req->api == API_CLONE) {
        word |= (unsigned long long)(req->exit_signal & 0xff);
    }
    if (st->error_hook != NULL) {
        PyObject *exc = PyObject_CallFunction(
            st->error_hook, "iKsi", err, word, pyclone_api_name(req->api),
            req->exit_signal);
        if (exc == NULL) {
            return NULL;
        }
        if (PyExceptionInstance_Check(exc)) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
            return NULL;
        }
        Py_DECREF(exc);
    }
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
}
