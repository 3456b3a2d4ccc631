/*
 * actions.c: starting an action: the checks specific to action children,
 * the clone through the trampoline onto the action's stack, the reporting
 * of a CLONE_VFORK child's failed step, and the Python entry points
 * (clone()/clone3() with an action, _spawn_action for the Task layer).
 */
#include "actions.h"

/* Start pyclone_act_child(pg) on the stack (base = guard page).  Returns
 * the new task's id or -errno. */
static long
act_start(enum api_kind api, unsigned long long flags, int exit_signal,
          char *base, size_t size, struct act_page *pg, int *pidfd,
          const pid_t *set_tid, Py_ssize_t set_tid_size, int cgroup_fd)
{
    char *top = base + ACT_GUARD + size - 16;
    int ptid = 0;
    flags |= F_CHILD_SETTID | F_CHILD_CLEARTID;
    ACT_STORE(pg->tid, -1);
    if (api == API_CLONE) {
        void *pt = (flags & F_PIDFD) ? (void *)pidfd : (void *)&ptid;
#if ACT_ASM_CLONE
        ((void **)top)[0] = (void *)pyclone_act_child;
        ((void **)top)[1] = pg;
        return pyclone_act_clone_asm(
            SYS_clone, (long)(flags | (unsigned)(exit_signal & 0xff)),
            (long)top, (long)pt, (long)&pg->tid, 0);
#else
        int r = clone(pyclone_act_child, top + 16,
                      (int)(flags | (unsigned)(exit_signal & 0xff)), pg, pt,
                      NULL, &pg->tid);
        return r < 0 ? -errno : r;
#endif
    }
#if ACT_ASM_CLONE
    struct pyclone_clone_args a;
    memset(&a, 0, sizeof(a));
    a.flags = flags;
    a.exit_signal = (uint64_t)exit_signal;
    a.child_tid = (uint64_t)(uintptr_t)&pg->tid;
    a.parent_tid = (uint64_t)(uintptr_t)&ptid;
    a.pidfd = (uint64_t)(uintptr_t)pidfd;
    a.stack = (uint64_t)(uintptr_t)(base + ACT_GUARD);
    a.stack_size = (uint64_t)(top - (base + ACT_GUARD));
    if (set_tid_size > 0) {
        a.set_tid = (uint64_t)(uintptr_t)set_tid;
        a.set_tid_size = (uint64_t)set_tid_size;
    }
    if (cgroup_fd >= 0) {
        a.cgroup = (uint64_t)cgroup_fd;
    }
    ((void **)top)[0] = (void *)pyclone_act_child;
    ((void **)top)[1] = pg;
    return pyclone_act_clone_asm(SYS_clone3, (long)&a, (long)sizeof(a), 0, 0,
                                 0);
#else
    (void)set_tid;
    (void)set_tid_size;
    (void)cgroup_fd;
    return -ENOSYS; /* action_check refuses clone3 without the trampoline */
#endif
}

static int
action_check(PyObject *module, const clone_request *req,
             const ProgramObject *prog)
{
    unsigned long long f = req->flags;
    if (f & F_SETTLS) {
        pyclone_raise_unsupported(
            module,
            "CLONE_SETTLS is refused: the child would need a thread control "
            "block that only the C library can build; drop CLONE_SETTLS "
            "(an action needs no TLS)");
        return -1;
    }
    if ((f & F_THREAD) && prog->has_exec) {
        pyclone_raise_unsupported(
            module,
            "an exec action with CLONE_THREAD is refused: execve in a thread "
            "replaces the whole process, the caller included; drop "
            "CLONE_THREAD (e.g. share='vfork')");
        return -1;
    }
    if ((f & F_SIGHAND) && prog->ignores_sigchld) {
        pyclone_raise_unsupported(
            module,
            "ignore_signal(SIGCHLD) with CLONE_SIGHAND is refused: it would "
            "set SIGCHLD to SIG_IGN in the caller's handler table, and the "
            "kernel would then reap the caller's children (this task "
            "included) behind its back; drop CLONE_SIGHAND or the step");
        return -1;
    }
    if ((f & F_SIGHAND) && (f & F_NEWPID)) {
        pyclone_raise_unsupported(
            module,
            "CLONE_SIGHAND|CLONE_NEWPID is refused: when the new pid "
            "namespace's init exits, the kernel sets SIGCHLD to SIG_IGN in "
            "the shared handler table, and the caller's children are then "
            "reaped behind its back; drop one of the two");
        return -1;
    }
    if (!ACT_ASM_CLONE && req->api == API_CLONE3) {
        pyclone_raise_unsupported(
            module,
            "clone3 with an action needs the x86_64 trampoline; use clone() "
            "on this architecture (spawn_task does)");
        return -1;
    }
    if (req->stack_size != 0 && req->stack_size < ACT_MIN_STACK) {
        PyErr_Format(PyExc_ValueError,
                     "stack_size for an action must be 0 (default %d) or at "
                     "least %d bytes",
                     ACT_DEFAULT_STACK, ACT_MIN_STACK);
        return -1;
    }
    return 0;
}

static int
act_reap(pid_t pid)
{
    int r;
    Py_BEGIN_ALLOW_THREADS
    do {
        r = waitpid(pid, NULL, WALL_OPTION);
    } while (r < 0 && errno == EINTR);
    Py_END_ALLOW_THREADS
    return r;
}

/* Start prog in a new task.  Returns a new _Run (and *pid_out, *pidfd_out)
 * or NULL with an exception.  A CLONE_VFORK task has ended or exec'd when
 * this returns; if one of its steps failed, it is reaped (when it is our
 * child) and the step's OSError raised here. */
static RunObject *
act_spawn(PyObject *module, clone_request *req, ProgramObject *prog,
          const sigset_t *exec_mask, pid_t *pid_out, int *pidfd_out)
{
    if (action_check(module, req, prog) < 0 ||
        PySys_Audit("pyclone.clone", "sKi", pyclone_api_name(req->api),
                    req->flags, req->exit_signal) < 0) {
        return NULL;
    }
    pyclone_act_reclaim();
    size_t size = req->stack_size == 0
                      ? ACT_DEFAULT_STACK
                      : ((size_t)req->stack_size + 4095) & ~(size_t)4095;
    RunObject *run = PyObject_New(RunObject, &pyclone_Run_Type);
    if (run == NULL) {
        return NULL;
    }
    run->prog = (ProgramObject *)Py_NewRef(prog);
    run->flags = req->flags;
    run->ended_hook_done = 0;
    run->stack_size = size;
    run->stack = pyclone_act_stack_get(size);
    run->page = run->stack ? pyclone_act_page_get() : NULL;
    if (run->page == NULL) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(run);
        return NULL;
    }
    struct act_page *pg = run->page;
    pg->ops = prog->ops;
    pg->nops = prog->nops;
    pg->environ = environ;
    pg->sighand = (req->flags & F_SIGHAND) != 0;

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* A caller holding signals across the launch names the mask an exec
     * must restore; otherwise it is the mask of this call. */
    memcpy(&pg->caller_mask, exec_mask != NULL ? exec_mask : &old,
           sizeof(pg->caller_mask));
    int pidfd = -1;
    long pid;
    /* The caller waits in the kernel for a vfork child, and copying a big
     * address space takes time: let other threads run meanwhile.  The
     * child never touches Python state. */
    if ((req->flags & F_VFORK) || !(req->flags & F_VM)) {
        Py_BEGIN_ALLOW_THREADS
        pid = act_start(req->api, req->flags, req->exit_signal, run->stack,
                        size, pg, &pidfd, req->set_tid, req->set_tid_size,
                        req->cgroup_fd);
        Py_END_ALLOW_THREADS
    }
    else {
        pid = act_start(req->api, req->flags, req->exit_signal, run->stack,
                        size, pg, &pidfd, req->set_tid, req->set_tid_size,
                        req->cgroup_fd);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (pid < 0) {
        ACT_STORE(pg->tid, 0); /* no task uses the memory */
        Py_DECREF(run);
        pyclone_raise_clone_error(module, (int)-pid, req);
        return NULL;
    }
    if (!(req->flags & F_VM) || (req->flags & F_VFORK)) {
        /* a copy child has its own stack; a vfork child has left ours */
        pyclone_act_stack_put(run->stack, size);
        run->stack = NULL;
    }
    if ((req->flags & F_VFORK) && ACT_LOAD(pg->state) == ACT_FAILED) {
        PyObject *exc = pyclone_run_error(run, NULL);
        if (pidfd >= 0) {
            close(pidfd);
        }
        if (!(req->flags & (F_THREAD | F_PARENT))) {
            act_reap((pid_t)pid);
        }
        /* steps before the failed one may have changed shared dispositions */
        if (exc != NULL && pyclone_run_finish(run) < 0) {
            Py_DECREF(exc);
            exc = NULL;
        }
        Py_DECREF(run);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    *pid_out = (pid_t)pid;
    *pidfd_out = pidfd;
    return run;
}

/* clone()/clone3() called with an action. */
PyObject *
pyclone_spawn_program(PyObject *module, clone_request *req, ProgramObject *prog,
                      const sigset_t *exec_mask)
{
    pid_t pid;
    int pidfd;
    RunObject *run = act_spawn(module, req, prog, exec_mask, &pid, &pidfd);
    if (run == NULL) {
        return NULL;
    }
    /* A CLONE_VFORK task has ended or exec'd: tell the signal module what
     * it changed in a shared handler table.  Otherwise the release is
     * deferred while a CLONE_VM task still runs. */
    if (pyclone_run_finish(run) < 0) {
        PyErr_WriteUnraisable((PyObject *)run);
    }
    Py_DECREF(run);
    if (req->api == API_CLONE) {
        pyclone_close_quietly(pidfd);
        return PyLong_FromLong(pid);
    }
    if (!req->want_pidfd || pidfd < 0) {
        pyclone_close_quietly(pidfd);
        return Py_BuildValue("(iO)", pid, Py_None);
    }
    return Py_BuildValue("(ii)", pid, pidfd);
}

PyDoc_STRVAR(spawn_action_doc,
             "_spawn_action($module, action, flags, exit_signal, pidfd, "
             "clone3, stack_size,\n              exec_mask=None, /)\n--\n\n"
             "Start an action (or _Program) for the Task layer; return "
             "(pid, pidfd or None, _Run).\nAn exec step restores exec_mask "
             "(signal numbers), by default the mask of\nthis call.");

static PyObject *
pyclone_spawn_action(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 && nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "_spawn_action takes 6 or 7 arguments");
        return NULL;
    }
    sigset_t exec_mask;
    int has_exec_mask =
        nargs == 7 ? pyclone_convert_exec_mask(args[6], &exec_mask) : 0;
    if (has_exec_mask < 0) {
        return NULL;
    }
    ProgramObject *prog = pyclone_action_program(args[0]);
    if (prog == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "expected an action, not %.100s",
                         Py_TYPE(args[0])->tp_name);
        }
        return NULL;
    }
    clone_request req;
    memset(&req, 0, sizeof(req));
    req.fn = args[0];
    req.cgroup_fd = -1;
    int want_pidfd = PyObject_IsTrue(args[3]);
    int use3 = PyObject_IsTrue(args[4]);
    req.exit_signal = pyclone_as_int(args[2]);
    req.stack_size = PyLong_AsSsize_t(args[5]);
    if (want_pidfd < 0 || use3 < 0 || PyErr_Occurred() ||
        pyclone_convert_flags(args[1], &req.flags) < 0) {
        Py_DECREF(prog);
        return NULL;
    }
    req.api = use3 ? API_CLONE3 : API_CLONE;
    req.want_pidfd = want_pidfd;
    if (want_pidfd) {
        req.flags |= F_PIDFD;
    }
    pid_t pid;
    int pidfd;
    RunObject *run = act_spawn(module, &req, prog,
                               has_exec_mask ? &exec_mask : NULL, &pid, &pidfd);
    Py_DECREF(prog);
    if (run == NULL) {
        return NULL;
    }
    PyObject *fdobj = pidfd >= 0 ? PyLong_FromLong(pidfd) : Py_NewRef(Py_None);
    PyObject *res = fdobj ? Py_BuildValue("(iNN)", pid, fdobj, run) : NULL;
    if (res == NULL) {
        Py_DECREF(run);
    }
    return res;
}

PyDoc_STRVAR(spawn_thread_doc,
             "_spawn_thread($module, action, flags, stack_size, /)\n--\n\n"
             "_spawn_action for a CLONE_THREAD task of the legacy clone's flags "
             "(no\npidfd, no exit signal): return (tid, _Run).");

/* The thread launch of spawn_task: what _spawn_action does with its
 * arguments fixed, so the common call converts three. */
static PyObject *
pyclone_spawn_thread(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "_spawn_thread takes 3 arguments");
        return NULL;
    }
    clone_request req;
    memset(&req, 0, sizeof(req));
    req.fn = args[0];
    req.cgroup_fd = -1;
    req.api = API_CLONE;
    req.stack_size = PyLong_AsSsize_t(args[2]);
    if ((req.stack_size == -1 && PyErr_Occurred()) ||
        pyclone_convert_flags(args[1], &req.flags) < 0) {
        return NULL;
    }
    /* a pidfd here would have no owner; the others need clone3 */
    if (!(req.flags & F_THREAD) ||
        (req.flags & (F_CSIGNAL | F_PIDFD | ~0xffffffffULL))) {
        PyErr_SetString(PyExc_ValueError,
                        "_spawn_thread needs CLONE_THREAD, and no CLONE_PIDFD, "
                        "exit-signal byte or flag above bit 31");
        return NULL;
    }
    ProgramObject *prog = pyclone_action_program(args[0]);
    if (prog == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError, "expected an action, not %.100s",
                         Py_TYPE(args[0])->tp_name);
        }
        return NULL;
    }
    pid_t pid;
    int pidfd;
    RunObject *run = act_spawn(module, &req, prog, NULL, &pid, &pidfd);
    Py_DECREF(prog);
    if (run == NULL) {
        return NULL;
    }
    return Py_BuildValue("(iN)", pid, run);
}

PyMethodDef pyclone_actions_methods[] = {
    {"_spawn_action", (PyCFunction)(void (*)(void))pyclone_spawn_action,
     METH_FASTCALL, spawn_action_doc},
    {"_spawn_thread", (PyCFunction)(void (*)(void))pyclone_spawn_thread,
     METH_FASTCALL, spawn_thread_doc},
    {NULL, NULL, 0, NULL},
};

int
pyclone_actions_init(PyObject *module)
{
    if (PyType_Ready(&pyclone_Program_Type) < 0 ||
        PyType_Ready(&pyclone_Run_Type) < 0) {
        return -1;
    }
    if (PyModule_AddObject(module, "_action_program",
                           Py_NewRef((PyObject *)&pyclone_Program_Type)) < 0) {
        Py_DECREF(&pyclone_Program_Type);
        return -1;
    }
    if (PyModule_AddObject(module, "_action_run",
                           Py_NewRef((PyObject *)&pyclone_Run_Type)) < 0) {
        Py_DECREF(&pyclone_Run_Type);
        return -1;
    }
    if (PyModule_AddIntConstant(module, "_act_clone3", ACT_ASM_CLONE) < 0 ||
        PyModule_AddIntConstant(module, "_act_running", ACT_RUNNING) < 0 ||
        PyModule_AddIntConstant(module, "_act_exited", ACT_EXITED) < 0 ||
        PyModule_AddIntConstant(module, "_act_failed", ACT_FAILED) < 0 ||
        PyModule_AddIntConstant(module, "_act_execing", ACT_EXECING) < 0 ||
        PyModule_AddIntConstant(module, "_act_cancelled", ACT_CANCELLED) < 0) {
        return -1;
    }
    return 0;
}
