/*
 * pidfd.c: pidfd_send_signal(2), with an optional sigqueue-style value.
 * A thin entry point; the policy is in pyclone.pidfd and pyclone.task.
 */
#include "pyclone.h"

#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

PyDoc_STRVAR(
    pidfd_send_signal_doc,
    "pidfd_send_signal($module, pidfd, sig, value=None, /)\n"
    "--\n\n"
    "Send signal sig to the task that pidfd refers to (pidfd_send_signal(2)).\n\n"
    "With value None the kernel fills in the siginfo as for kill(2)\n"
    "(SI_USER).  With an int value the signal is queued like sigqueue(3):\n"
    "si_code SI_QUEUE, this process's pid and uid, and si_value.sival_int\n"
    "(and sival_ptr) set to value.  Raises OSError with the kernel's errno:\n"
    "ESRCH once the task has been reaped, even if its pid number was reused.");

static PyObject *
pyclone_pidfd_send_signal(PyObject *Py_UNUSED(module), PyObject *args)
{
    int pidfd, sig;
    PyObject *value = Py_None;
    if (!PyArg_ParseTuple(args, "ii|O:pidfd_send_signal", &pidfd, &sig,
                          &value)) {
        return NULL;
    }
    siginfo_t info;
    siginfo_t *infop = NULL;
    if (value != Py_None) {
        if (!PyLong_Check(value)) {
            PyErr_Format(PyExc_TypeError,
                         "value must be an int or None, not %.100s",
                         Py_TYPE(value)->tp_name);
            return NULL;
        }
        long long v = PyLong_AsLongLong(value);
        if (v == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (v < INTPTR_MIN || v > INTPTR_MAX) {
            PyErr_SetString(PyExc_OverflowError,
                            "value must fit in a pointer-sized int");
            return NULL;
        }
        memset(&info, 0, sizeof(info));
        info.si_signo = sig;
        info.si_code = SI_QUEUE;
        info.si_pid = getpid();
        info.si_uid = getuid();
        info.si_value.sival_ptr = (void *)(intptr_t)v;
        infop = &info;
    }
    if (syscall(SYS_pidfd_send_signal, pidfd, sig, infop, 0) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

PyMethodDef pyclone_pidfd_methods[] = {
    {"pidfd_send_signal", pyclone_pidfd_send_signal, METH_VARARGS,
     pidfd_send_signal_doc},
    {NULL, NULL, 0, NULL},
};
