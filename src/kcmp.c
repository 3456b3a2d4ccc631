/*
 * kcmp.c: kcmp(2), comparing a kernel resource of two tasks; the KCMP_*
 * constants are added by module.c, the interpretation is pyclone.sharing's.
 */
#include "pyclone.h"

#ifndef SYS_kcmp
#define SYS_kcmp 312
#endif

PyDoc_STRVAR(kcmp_doc,
             "kcmp($module, pid1, pid2, type, idx1=0, idx2=0, /)\n"
             "--\n\n"
             "Compare a kernel resource of two tasks with kcmp(2).\n\n"
             "Returns 0 (same object), 1 (pid1's sorts first), 2 (pid2's "
             "sorts first)\nor 3 (different, order unknown).  Raises OSError "
             "on failure.");

static PyObject *
pyclone_kcmp(PyObject *Py_UNUSED(module), PyObject *args)
{
    int pid1, pid2, type;
    unsigned long idx1 = 0, idx2 = 0;
    if (!PyArg_ParseTuple(args, "iii|kk:kcmp", &pid1, &pid2, &type, &idx1,
                          &idx2)) {
        return NULL;
    }
    long r = syscall(SYS_kcmp, (pid_t)pid1, (pid_t)pid2, type, idx1, idx2);
    if (r < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(r);
}

PyMethodDef pyclone_kcmp_methods[] = {
    {"kcmp", pyclone_kcmp, METH_VARARGS, kcmp_doc},
    {NULL, NULL, 0, NULL},
};
