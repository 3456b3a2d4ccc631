/*
 * seccomp.c: load a classic-BPF seccomp filter (struct sock_filter array)
 * on the calling thread with prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER).
 * Argument conversion and the kernel's errno only: which programs, in what
 * order and when is pyclone.sandbox's.
 */
#include "pyclone.h"

#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

PyDoc_STRVAR(set_seccomp_filter_doc,
             "set_seccomp_filter($module, program, /)\n"
             "--\n\n"
             "Load program, a bytes-like array of struct sock_filter (8 bytes\n"
             "each), as a seccomp filter of the calling thread (prctl(2)\n"
             "PR_SET_SECCOMP, SECCOMP_MODE_FILTER).  The kernel checks the\n"
             "program (EINVAL) and needs no_new_privs or CAP_SYS_ADMIN (EACCES).\n"
             "Raises OSError with the kernel's errno.");

static PyObject *
pyclone_set_seccomp_filter(PyObject *Py_UNUSED(module), PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError,
                     "program must be a bytes-like object, not %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    size_t size = (size_t)view.len;
    if (size % sizeof(struct sock_filter) != 0 ||
        size / sizeof(struct sock_filter) > USHRT_MAX) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError,
                     "program must be a whole number of 8-byte instructions "
                     "(at most %d), not %zu bytes",
                     USHRT_MAX, size);
        return NULL;
    }
    /* The kernel copies the instructions at once: the buffer is not kept. */
    struct sock_fprog prog = {
        .len = (unsigned short)(size / sizeof(struct sock_filter)),
        .filter = (struct sock_filter *)view.buf,
    };
    int r = prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
    int saved = errno;
    PyBuffer_Release(&view);
    if (r < 0) {
        errno = saved;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

PyMethodDef pyclone_seccomp_methods[] = {
    {"set_seccomp_filter", pyclone_set_seccomp_filter, METH_O,
     set_seccomp_filter_doc},
    {NULL, NULL, 0, NULL},
};
