/*
 * actions_program.c: _action_program, an action compiled before the clone
 * into a flat array of ops (struct act_op) that the child can run without
 * Python: every path, argv and buffer is resolved and held here.
 */
#include "actions.h"

static char **
program_strv(ProgramObject *self, PyObject *seq, const char *what)
{
    if (!PyTuple_Check(seq)) {
        PyErr_Format(PyExc_TypeError, "exec %s must be a tuple of bytes", what);
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    char **v = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (v == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    self->arrays[self->narrays++] = v;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(seq, i);
        if (!PyBytes_Check(item) ||
            strlen(PyBytes_AS_STRING(item)) != (size_t)PyBytes_GET_SIZE(item)) {
            PyErr_Format(PyExc_TypeError,
                         "exec %s items must be bytes without NUL", what);
            return NULL;
        }
        v[i] = PyBytes_AS_STRING(item);
    }
    return v;
}

static const char *
program_path(PyObject *obj)
{
    if (!PyBytes_Check(obj) ||
        strlen(PyBytes_AS_STRING(obj)) != (size_t)PyBytes_GET_SIZE(obj)) {
        PyErr_SetString(PyExc_TypeError, "paths must be bytes without NUL");
        return NULL;
    }
    return PyBytes_AS_STRING(obj);
}

static int
program_compile(ProgramObject *self, PyObject *op, struct act_op *out)
{
    PyObject *name = PyTuple_GET_ITEM(op, 0);
    Py_ssize_t n = PyTuple_GET_SIZE(op);
    const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
    if (s == NULL) {
        PyErr_SetString(PyExc_TypeError, "op name must be a str");
        return -1;
    }
#define ARG(i) PyTuple_GET_ITEM(op, (i))
    if (strcmp(s, "exit") == 0 && n == 3) {
        out->code = OP_EXIT;
        out->num = PyLong_AsLong(ARG(2));
        return (out->num == -1 && PyErr_Occurred()) ? -1 : 0;
    }
    if (strcmp(s, "sleep") == 0 && n == 3) {
        double t = PyFloat_AsDouble(ARG(2));
        if (t == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        if (!(t >= 0.0 && t < 1e9)) {
            PyErr_SetString(PyExc_ValueError, "sleep seconds out of range");
            return -1;
        }
        out->code = OP_SLEEP;
        out->ts.tv_sec = (time_t)t;
        out->ts.tv_nsec = (long)((t - (double)out->ts.tv_sec) * 1e9);
        return 0;
    }
    if (strcmp(s, "write") == 0 && n == 5) {
        Py_buffer *b = &self->bufs[self->nbufs];
        if (PyObject_GetBuffer(ARG(2), b, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0) {
            return -1;
        }
        self->nbufs++;
        Py_ssize_t offset = PyLong_AsSsize_t(ARG(3));
        if (offset == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (!PyBytes_Check(ARG(4))) {
            PyErr_SetString(PyExc_TypeError, "write data must be bytes");
            return -1;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(ARG(4));
        if (offset < 0 || offset > b->len || len > b->len - offset) {
            PyErr_SetString(PyExc_ValueError,
                            "write: offset + len(data) exceeds the buffer");
            return -1;
        }
        out->code = OP_WRITE;
        out->dst = (char *)b->buf + offset;
        out->src = PyBytes_AS_STRING(ARG(4));
        out->len = (size_t)len;
        return 0;
    }
    if (strcmp(s, "chdir") == 0 && n == 3) {
        out->code = OP_CHDIR;
        out->path = program_path(ARG(2));
        return out->path ? 0 : -1;
    }
    if (strcmp(s, "close") == 0 && n == 3) {
        out->code = OP_CLOSE;
        out->num = PyLong_AsLong(ARG(2));
        return (out->num == -1 && PyErr_Occurred()) ? -1 : 0;
    }
    if ((strcmp(s, "ignore_signal") == 0 ||
         strcmp(s, "default_signal") == 0) &&
        n == 3) {
        out->code = s[0] == 'i' ? OP_IGNORE_SIGNAL : OP_DEFAULT_SIGNAL;
        out->num = PyLong_AsLong(ARG(2));
        if (out->num == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (out->num < 1 || out->num > 64) {
            PyErr_Format(PyExc_ValueError,
                         "%s: signal number %ld is not in 1..64", s, out->num);
            return -1;
        }
        if (out->code == OP_IGNORE_SIGNAL && out->num == SIGCHLD) {
            self->ignores_sigchld = 1;
        }
        return 0;
    }
    if (strcmp(s, "exec") == 0 && n == 5) {
        out->code = OP_EXEC;
        self->has_exec = 1;
        out->path = program_path(ARG(2));
        if (out->path == NULL ||
            (out->argv = program_strv(self, ARG(3), "argv")) == NULL) {
            return -1;
        }
        if (ARG(4) != Py_None &&
            (out->envp = program_strv(self, ARG(4), "env")) == NULL) {
            return -1;
        }
        return 0;
    }
#undef ARG
    PyErr_Format(PyExc_ValueError, "unknown action op %R", op);
    return -1;
}

static void
program_dealloc(ProgramObject *self)
{
    for (Py_ssize_t i = 0; i < self->nbufs; i++) {
        PyBuffer_Release(&self->bufs[i]);
    }
    for (Py_ssize_t i = 0; i < self->narrays; i++) {
        PyMem_Free(self->arrays[i]);
    }
    PyMem_Free(self->bufs);
    PyMem_Free(self->arrays);
    PyMem_Free(self->ops);
    Py_XDECREF(self->keep);
    Py_XDECREF(self->labels);
    Py_XDECREF(self->make_error);
    Py_XDECREF(self->on_end);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
program_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ops", "make_error", "on_end", NULL};
    PyObject *ops_arg, *make_error, *on_end = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O:_action_program",
                                     kwlist, &ops_arg, &make_error, &on_end)) {
        return NULL;
    }
    if (!PyCallable_Check(make_error)) {
        PyErr_SetString(PyExc_TypeError, "make_error must be callable");
        return NULL;
    }
    if (on_end != Py_None && !PyCallable_Check(on_end)) {
        PyErr_SetString(PyExc_TypeError, "on_end must be callable or None");
        return NULL;
    }
    PyObject *ops = PySequence_Tuple(ops_arg);
    if (ops == NULL) {
        return NULL;
    }
    ProgramObject *self = (ProgramObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(ops);
        return NULL;
    }
    self->keep = ops;
    self->make_error = Py_NewRef(make_error);
    self->on_end = on_end == Py_None ? NULL : Py_NewRef(on_end);
    Py_ssize_t n = PyTuple_GET_SIZE(ops);
    self->ops = PyMem_Calloc((size_t)n + 1, sizeof(struct act_op));
    self->bufs = PyMem_Calloc((size_t)n + 1, sizeof(Py_buffer));
    self->arrays = PyMem_Calloc(2 * (size_t)n + 1, sizeof(char **));
    self->labels = PyTuple_New(n);
    if (self->ops == NULL || self->bufs == NULL || self->arrays == NULL ||
        self->labels == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *op = PyTuple_GET_ITEM(ops, i);
        if (!PyTuple_Check(op) || PyTuple_GET_SIZE(op) < 2 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(op, 1))) {
            PyErr_SetString(PyExc_TypeError,
                            "each op must be a tuple (name, label, *args)");
            Py_DECREF(self);
            return NULL;
        }
        PyTuple_SET_ITEM(self->labels, i, Py_NewRef(PyTuple_GET_ITEM(op, 1)));
        if (program_compile(self, op, &self->ops[i]) < 0) {
            Py_DECREF(self);
            return NULL;
        }
        self->nops++;
    }
    return (PyObject *)self;
}

static PyObject *
program_get_labels(ProgramObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->labels);
}

static PyGetSetDef program_getset[] = {
    {"labels", (getter)program_get_labels, NULL, "one label per op", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyDoc_STRVAR(program_doc,
             "_action_program(ops, make_error, on_end=None)\n--\n\n"
             "An action compiled into raw system calls for a child (private;\n"
             "build it with pyclone.actions).  ops: tuples (name, label, "
             "*args).\nmake_error(errno, label, index) must return an "
             "exception; on_end() is\ncalled once a CLONE_SIGHAND task running "
             "it has ended and was\nwaited for.  The writable buffers it names are held (locked against "
             "resizing)\nuntil the program and every task running it are "
             "gone.");

PyTypeObject pyclone_Program_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyclone._pyclone._action_program",
    .tp_basicsize = sizeof(ProgramObject),
    .tp_dealloc = (destructor)program_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = program_doc,
    .tp_getset = program_getset,
    .tp_new = program_new,
};

/* The program of `fn` (an action with a `_program`, or a _Program), as a
 * new reference; NULL without an exception when fn is not an action. */
ProgramObject *
pyclone_action_program(PyObject *fn)
{
    if (PyObject_TypeCheck(fn, &pyclone_Program_Type)) {
        return (ProgramObject *)Py_NewRef(fn);
    }
    if (PyCallable_Check(fn)) {
        return NULL;
    }
    PyObject *p = PyObject_GetAttrString(fn, "_program");
    if (p == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (!PyObject_TypeCheck(p, &pyclone_Program_Type)) {
        Py_DECREF(p);
        return NULL;
    }
    return (ProgramObject *)p;
}
