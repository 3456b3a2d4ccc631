/*
 * safety.c: the checks that keep the caller safe when the child runs a
 * Python callable.  They must hold even for callers that use this module
 * directly: a request that could corrupt or hang the calling interpreter is
 * refused with UnsupportedFlags (or RuntimeError), saying what to use
 * instead.  Actions have their own checks (actions.c).
 */
#include "pyclone.h"

/* CLONE_VM with a Python callable: only the borrowed-interpreter shape
 * (CLONE_VFORK, flags the legacy clone() can express, a big enough stack)
 * on builds that support it. */
int
pyclone_vm_check(PyObject *module, const clone_request *req)
{
    unsigned long long f = req->flags;
#if !PYCLONE_VM_SUPPORTED
    (void)f;
#ifdef Py_GIL_DISABLED
    pyclone_raise_unsupported(
        module,
        "CLONE_VM with a Python callable is refused on free-threaded "
        "builds: the child would run concurrently with the caller's other "
        "threads on a borrowed thread identity; drop CLONE_VM or use a "
        "pyclone.actions action");
#else
    pyclone_raise_unsupported(
        module,
        "CLONE_VM with a Python callable is not supported on Python %d.%d: "
        "pyclone only knows how to borrow the interpreter safely on "
        "3.10-3.15; drop CLONE_VM or use a pyclone.actions action",
        PY_MAJOR_VERSION, PY_MINOR_VERSION);
#endif
    return -1;
#else
    if (!(f & F_VFORK)) {
        pyclone_raise_unsupported(
            module,
            "CLONE_VM without CLONE_VFORK with a Python callable is refused: "
            "the child would run Python in the caller's memory while the "
            "caller runs too; add CLONE_VFORK (the caller then waits until "
            "the child exits or execs) or use a pyclone.actions action");
        return -1;
    }
    if ((f & F_SIGHAND) && (f & F_NEWPID)) {
        pyclone_raise_unsupported(
            module,
            "CLONE_SIGHAND|CLONE_NEWPID is refused with CLONE_VM: when the "
            "child, init of the new pid namespace, exits, the kernel sets "
            "SIGCHLD to SIG_IGN in the shared signal handlers and the "
            "caller stops being able to wait for its children; drop "
            "CLONE_SIGHAND");
        return -1;
    }
    if (req->api == API_CLONE3) {
        /* No clone3 trampoline here: serve the request with the legacy
         * clone() wrapper when it can express it. */
        const char *why = NULL;
        if (f >> 32) {
            why = "flags above the low 32 bits";
        }
        else if (f & F_NEWTIME) {
            why = "CLONE_NEWTIME";
        }
        else if (req->set_tid_size > 0) {
            why = "set_tid";
        }
        else if (req->cgroup_fd >= 0) {
            why = "cgroup";
        }
        else if ((f & F_PIDFD) && (f & F_PARENT_SETTID)) {
            why = "CLONE_PIDFD together with CLONE_PARENT_SETTID";
        }
        else if (req->exit_signal > 0xff) {
            why = "this exit_signal";
        }
        if (why != NULL) {
            pyclone_raise_unsupported(
                module,
                "clone3() with CLONE_VM and a Python callable is served by "
                "clone(2), which cannot express %s; drop it, or use a "
                "pyclone.actions action",
                why);
            return -1;
        }
    }
    if (req->stack_size != 0 && req->stack_size < VM_MIN_MMAP_STACK) {
        PyErr_Format(PyExc_ValueError,
                     "stack_size %zd is too small for a Python child: use 0 "
                     "(the default, %d bytes) or more",
                     req->stack_size, VM_MIN_MMAP_STACK);
        return -1;
    }
    (void)module;
    return 0;
#endif
}

/* Checks that keep the caller safe. Returns 0, or -1 with an exception. */
int
pyclone_check_request(PyObject *module, clone_request *req)
{
    unsigned long long f = req->flags;

    if (!PyCallable_Check(req->fn)) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument 'fn' must be callable, not %.100s",
                     pyclone_api_name(req->api), Py_TYPE(req->fn)->tp_name);
        return -1;
    }
    if (f & F_SETTLS) {
        pyclone_raise_unsupported(
            module,
            "CLONE_SETTLS is refused: the child would need a thread control "
            "block that only the C library can build; use threading.Thread "
            "for a thread, or drop CLONE_SETTLS");
        return -1;
    }
    if (f & F_THREAD) {
        pyclone_raise_unsupported(
            module,
            "CLONE_THREAD with a Python callable is refused: the thread "
            "would share the caller's thread pointer, and any exit or exec "
            "in it would end the whole process; use threading.Thread, or a "
            "pyclone.actions action as the child");
        return -1;
    }
    if ((f & F_VM) && pyclone_vm_check(module, req) < 0) {
        return -1;
    }
    if (!Py_IsInitialized() || pyclone_is_finalizing()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot create a task while the interpreter is "
                        "finalizing");
        return -1;
    }
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pyclone can only create tasks from the main "
                        "interpreter");
        return -1;
    }
    return 0;
}
