/*
 * module.c: the pyclone._pyclone module itself: multi-phase init, the
 * CLONE_* and KCMP_* constants, the UnsupportedFlags exception, the module
 * state (with the error hook), and the method tables the other files
 * provide, added in one place.
 */
#include "pyclone.h"

static const flag_def flag_table[] = {
    {"CSIGNAL", F_CSIGNAL},
    {"CLONE_NEWTIME", F_NEWTIME},
    {"CLONE_VM", F_VM},
    {"CLONE_FS", F_FS},
    {"CLONE_FILES", F_FILES},
    {"CLONE_SIGHAND", F_SIGHAND},
    {"CLONE_PIDFD", F_PIDFD},
    {"CLONE_PTRACE", F_PTRACE},
    {"CLONE_VFORK", F_VFORK},
    {"CLONE_PARENT", F_PARENT},
    {"CLONE_THREAD", F_THREAD},
    {"CLONE_NEWNS", F_NEWNS},
    {"CLONE_SYSVSEM", F_SYSVSEM},
    {"CLONE_SETTLS", F_SETTLS},
    {"CLONE_PARENT_SETTID", F_PARENT_SETTID},
    {"CLONE_CHILD_CLEARTID", F_CHILD_CLEARTID},
    {"CLONE_DETACHED", F_DETACHED},
    {"CLONE_UNTRACED", F_UNTRACED},
    {"CLONE_CHILD_SETTID", F_CHILD_SETTID},
    {"CLONE_NEWCGROUP", F_NEWCGROUP},
    {"CLONE_NEWUTS", F_NEWUTS},
    {"CLONE_NEWIPC", F_NEWIPC},
    {"CLONE_NEWUSER", F_NEWUSER},
    {"CLONE_NEWPID", F_NEWPID},
    {"CLONE_NEWNET", F_NEWNET},
    {"CLONE_IO", F_IO},
    {"CLONE_CLEAR_SIGHAND", F_CLEAR_SIGHAND},
    {"CLONE_INTO_CGROUP", F_INTO_CGROUP},
};

PyDoc_STRVAR(set_error_hook_doc,
             "_set_error_hook($module, hook, /)\n"
             "--\n\n"
             "Install hook(errno, flags, api, exit_signal) -> OSError, used "
             "to build\nthe exception for a rejected clone; None removes it.");

static PyObject *
pyclone_set_error_hook(PyObject *module, PyObject *hook)
{
    module_state *st = pyclone_state(module);
    if (hook != Py_None && !PyCallable_Check(hook)) {
        PyErr_SetString(PyExc_TypeError, "hook must be callable or None");
        return NULL;
    }
    Py_CLEAR(st->error_hook);
    if (hook != Py_None) {
        st->error_hook = Py_NewRef(hook);
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_set_error_hook", pyclone_set_error_hook, METH_O, set_error_hook_doc},
    {NULL, NULL, 0, NULL},
};

/* The functions of every other file, added by module_exec. */
static PyMethodDef *const method_tables[] = {
    pyclone_clone_methods,    pyclone_kcmp_methods,
    pyclone_pidfd_methods,    pyclone_nsutil_methods,
    pyclone_threads_methods,  pyclone_actions_methods,
    pyclone_floor_methods,    pyclone_borrowed_methods,
    pyclone_seccomp_methods,
};

/* ------------------------------------------------------------------ */
/* Module init (multi-phase) */

PyDoc_STRVAR(unsupported_doc,
             "A flag set or child kind that pyclone refuses.\n\n"
             "The message says why, and what to use instead.");

static int
module_exec(PyObject *module)
{
    module_state *st = pyclone_state(module);
    for (size_t i = 0; i < sizeof(method_tables) / sizeof(method_tables[0]);
         i++) {
        if (PyModule_AddFunctions(module, method_tables[i]) < 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < sizeof(flag_table) / sizeof(flag_table[0]); i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(flag_table[i].value);
        if (v == NULL || PyModule_AddObject(module, flag_table[i].name, v) < 0) {
            Py_XDECREF(v);
            return -1;
        }
    }
    if (PyModule_AddIntConstant(module, "WALL", WALL_OPTION) < 0 ||
        PyModule_AddIntConstant(module, "KCMP_FILE", 0) < 0 ||
        PyModule_AddIntConstant(module, "KCMP_VM", 1) < 0 ||
        PyModule_AddIntConstant(module, "KCMP_FILES", 2) < 0 ||
        PyModule_AddIntConstant(module, "KCMP_FS", 3) < 0 ||
        PyModule_AddIntConstant(module, "KCMP_SIGHAND", 4) < 0 ||
        PyModule_AddIntConstant(module, "KCMP_IO", 5) < 0 ||
        PyModule_AddIntConstant(module, "KCMP_SYSVSEM", 6) < 0 ||
        PyModule_AddIntConstant(module, "KCMP_EPOLL_TFD", 7) < 0 ||
        PyModule_AddIntConstant(module, "MAX_SET_TID", MAX_SET_TID) < 0) {
        return -1;
    }
    if (pyclone_nsutil_add_constants(module) < 0) {
        return -1;
    }
    if (pyclone_actions_init(module) < 0 || pyclone_fdowner_init(module) < 0) {
        return -1;
    }
    st->UnsupportedFlags = PyErr_NewExceptionWithDoc(
        "pyclone.UnsupportedFlags", unsupported_doc, PyExc_ValueError, NULL);
    if (st->UnsupportedFlags == NULL) {
        return -1;
    }
    if (PyModule_AddObject(module, "UnsupportedFlags",
                           Py_NewRef(st->UnsupportedFlags)) < 0) {
        Py_DECREF(st->UnsupportedFlags);
        return -1;
    }
    if (pyclone_borrowed_init(module) < 0) {
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = pyclone_state(module);
    Py_VISIT(st->UnsupportedFlags);
    Py_VISIT(st->error_hook);
    return 0;
}

static int
module_clear(PyObject *module)
{
    module_state *st = pyclone_state(module);
    Py_CLEAR(st->UnsupportedFlags);
    Py_CLEAR(st->error_hook);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    PYCLONE_SLOT_INTERPRETERS
    PYCLONE_SLOT_GIL
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
             "Thin bindings for clone(2), clone3(2) and kcmp(2).\n\n"
             "Use the pyclone package; this module is private.");

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pyclone._pyclone",
    .m_doc = module_doc,
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__pyclone(void)
{
    return PyModuleDef_Init(&module_def);
}
