/*
 * fdowner.c: _pyclone.Fd, the one owner of a file descriptor pyclone opened.
 *
 * It is in C because closing must not be interruptible: a Python signal
 * handler can raise at any bytecode boundary, so a Python owner that
 * forgets its number and then closes it can lose the number in between,
 * and a Python __del__ can be stopped before its first line.  Here the
 * number is taken out with an atomic exchange and closed in the same call,
 * and dealloc closes without running any Python code.
 */
#include "pyclone.h"

typedef struct {
    PyObject_HEAD
    int fd; /* -1 once closed */
} FdObject;

/* Take the number out (whoever gets it closes it) and close it. */
static int
fd_take_and_close(FdObject *self)
{
    int fd = __atomic_exchange_n(&self->fd, -1, __ATOMIC_ACQ_REL);
    if (fd < 0) {
        return 0;
    }
    /* Linux frees the number even when close reports EINTR: never retry. */
    if (close(fd) < 0 && errno != EINTR) {
        return -1;
    }
    return 0;
}

static PyObject *
fd_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *arg;
    static char *kwlist[] = {"fd", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Fd", kwlist, &arg)) {
        return NULL;
    }
    if (!PyLong_Check(arg) || PyBool_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "fd must be an int, not %s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    int overflow;
    long value = PyLong_AsLongAndOverflow(arg, &overflow);
    if (value == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (overflow || value > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "fd is out of range for a descriptor number");
        return NULL;
    }
    int fd = (int)value;
    if (fd < 0) {
        PyErr_Format(PyExc_ValueError,
                     "fd must be a descriptor number >= 0, not %d", fd);
        return NULL;
    }
    FdObject *self = (FdObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->fd = fd;
    return (PyObject *)self;
}

static void
fd_dealloc(FdObject *self)
{
    int saved = errno;
    (void)fd_take_and_close(self); /* nobody is left to report an error to */
    errno = saved;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
fd_close(FdObject *self, PyObject *Py_UNUSED(ignored))
{
    if (fd_take_and_close(self) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

static PyObject *
fd_get_fd(FdObject *self, void *Py_UNUSED(closure))
{
    int fd = __atomic_load_n(&self->fd, __ATOMIC_ACQUIRE);
    if (fd < 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(fd);
}

static PyObject *
fd_repr(FdObject *self)
{
    int fd = __atomic_load_n(&self->fd, __ATOMIC_ACQUIRE);
    if (fd < 0) {
        return PyUnicode_FromString("<pyclone Fd closed>");
    }
    return PyUnicode_FromFormat("<pyclone Fd %d>", fd);
}

static PyObject *
fd_dup(FdObject *self, PyObject *Py_UNUSED(ignored))
{
    /* read and duplicated with the GIL held: no Python code can close the
     * number (and a new descriptor take it) in between */
    int fd = __atomic_load_n(&self->fd, __ATOMIC_ACQUIRE);
    if (fd < 0) {
        errno = EBADF;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    FdObject *owner = (FdObject *)Py_TYPE(self)->tp_alloc(Py_TYPE(self), 0);
    if (owner == NULL) {
        close(copy);
        return NULL;
    }
    owner->fd = copy;
    return (PyObject *)owner;
}

static PyMethodDef fd_methods[] = {
    {"dup", (PyCFunction)fd_dup, METH_NOARGS,
     "dup(): a new owner of a close-on-exec duplicate of the descriptor.\n"
     "Raises OSError (EBADF once closed, or fcntl(2)'s errno)."},
    {"close", (PyCFunction)fd_close, METH_NOARGS,
     "close(): close the descriptor if still open; later calls do nothing.\n"
     "Raises OSError with close(2)'s errno (the number is gone either way)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fd_getset[] = {
    {"fd", (getter)fd_get_fd, NULL,
     "The descriptor number, or None once closed.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject pyclone_Fd_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyclone._pyclone.Fd",
    .tp_basicsize = sizeof(FdObject),
    .tp_dealloc = (destructor)fd_dealloc,
    .tp_repr = (reprfunc)fd_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Fd(fd)\n--\n\n"
              "The one owner of a file descriptor: closes it exactly once, "
              "on close()\nor when the owner is freed, with no Python code "
              "in between.",
    .tp_methods = fd_methods,
    .tp_getset = fd_getset,
    .tp_new = fd_new,
};

/* The number obj owns (-1 once closed), or -2 if obj is not an Fd.  With
 * the GIL held nobody can close it until the caller lets go of the GIL:
 * a non-blocking system call on the number in between cannot reach a
 * descriptor that reused it. */
int
pyclone_fd_owner_number(PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &pyclone_Fd_Type)) {
        return -2;
    }
    return __atomic_load_n(&((FdObject *)obj)->fd, __ATOMIC_ACQUIRE);
}

int
pyclone_fdowner_init(PyObject *module)
{
    if (PyType_Ready(&pyclone_Fd_Type) < 0) {
        return -1;
    }
    if (PyModule_AddObject(module, "Fd", Py_NewRef((PyObject *)&pyclone_Fd_Type)) <
        0) {
        Py_DECREF(&pyclone_Fd_Type);
        return -1;
    }
    return 0;
}
