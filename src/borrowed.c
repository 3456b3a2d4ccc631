/*
 * borrowed.c: the caller's side of the borrowed interpreter: a Python
 * callable in a CLONE_VM|CLONE_VFORK child, started from here and
 * recovered after, whatever way the child left.  Also the module surface
 * of that path (ChildExitRequest/ChildExecRequest, abandoned_thread_states,
 * _child_kind, _vm_supported, _tstate_id).
 *
 * The child shares the caller's memory, so it cannot have an interpreter
 * of its own: it borrows the caller's.  That is only safe while the caller
 * is suspended, i.e. with CLONE_VFORK, and only on GIL builds whose thread
 * state layout we know (3.10 to 3.15).  The sequence (measured design, see
 * docs/limits.rst):
 *
 *   parent: create a fresh PyThreadState for the child; block every
 *           signal; glibc clone() with an mmap'ed stack and
 *           pyclone_vm_child_main as the function.  The caller sleeps in
 *           the kernel until the child execs or exits.
 *   child:  swap the fresh thread state in, run fn() with signals still
 *           blocked (and, if the caller is the main thread, with no
 *           thread the main thread: the child never runs signal
 *           handlers), swap the caller's back, free the fresh one, and
 *           release the GIL on the suspended caller's behalf (as
 *           _posixsubprocess does around vfork); then exec or exit.
 *   parent: take the GIL back.  If the child never got that far (os._exit,
 *           os.execv, SIGKILL), recover the caller's thread state, sever
 *           the dead child's frame chain from the dead stack, and leak the
 *           child's thread state: freeing it is a use-after-free through
 *           any frame object the child created.
 *
 * PyOS_AfterFork_* must never run here: they would reinitialise the locks
 * and thread states the caller shares.
 */
#include "borrowed.h"

#include <pthread.h>
#include <sys/mman.h>

PyObject *pyclone_vm_exit_request;
PyObject *pyclone_vm_exec_request;
/* Protected by the GIL. */
static Py_ssize_t vm_abandoned;

#if PYCLONE_VM_SUPPORTED

/* The child always runs on a stack of its own, mapped here and unmapped
 * after the child is gone (and its frames severed): never on the caller's
 * stack below its stack pointer, where the dead child's frames, which the
 * recovery still reads, could be overwritten by any signal frame or call.
 * 8 MiB unless stack_size asks for more: 3.13's C recursion counter
 * assumes a main-thread-sized stack (a 256 KiB one overflows, measured). */
#define VM_DEFAULT_STACK VM_MIN_MMAP_STACK

/* The child's frames poison the shadow of its stack in an ASan build;
 * they never return, so clear it before the memory goes back. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define VM_UNPOISON(addr, len) __asan_unpoison_memory_region((addr), (len))
#else
#define VM_UNPOISON(addr, len) ((void)(addr), (void)(len))
#endif

/* Protected by the GIL. */
static vm_ctx *vm_running;
static int vm_gc_users;
static int vm_gc_was_enabled;
static int vm_hook_installed;

/* The running child whose thread state is current in this process, if any.
 * In a fork-like grandchild the list is a stale copy: the pid check tells. */
static vm_ctx *
vm_current_child(void)
{
    if (vm_running == NULL) {
        return NULL;
    }
    PyThreadState *ts = pyclone_tstate_unchecked();
    for (vm_ctx *c = vm_running; c != NULL; c = c->next) {
        if (c->child_ts == ts &&
            __atomic_load_n(&c->child_pid, __ATOMIC_ACQUIRE) == getpid()) {
            return c;
        }
    }
    return NULL;
}

/* Threads started in a CLONE_VM child belong to the child's process but
 * run in the caller's memory; when the child execs or exits they die
 * wherever they are (holding the GIL, inside malloc) and the caller hangs
 * (measured).  Refuse them where Python starts them. */
static int
vm_audit_hook(const char *event, PyObject *Py_UNUSED(args),
              void *Py_UNUSED(data))
{
    if (vm_running == NULL || strncmp(event, "_thread.start_", 14) != 0) {
        return 0;
    }
    if (vm_current_child() != NULL) {
        PyErr_SetString(
            PyExc_RuntimeError,
            "cannot start a thread in a CLONE_VM child: it would run in the "
            "caller's memory and die wherever it is when the child exits or "
            "execs, which can hang the caller; start threads in the parent, "
            "or use a child without CLONE_VM");
        return -1;
    }
    return 0;
}

/* Issue the clone. */
static Py_NO_INLINE pid_t
vm_do_clone(vm_ctx *ctx, char *stack_top, int word, int *ptid, int *ctid,
            int *err)
{
    pid_t pid = clone(pyclone_vm_child_main, stack_top, word, ctx, ptid, NULL,
                      ctid);
    if (pid < 0) {
        *err = errno; /* errno is shared with the child: read it now only */
    }
    return pid;
}

static void
vm_close(int fd)
{
    if (fd >= 0) {
        close(fd);
    }
}

static void
vm_gc_hold(void)
{
    if (vm_gc_users++ == 0) {
        vm_gc_was_enabled = PyGC_Disable();
    }
}

static void
vm_gc_release(void)
{
    if (--vm_gc_users == 0 && vm_gc_was_enabled) {
        PyGC_Enable();
    }
}

/* A pending call whose only job is to make the caller's eval loop look at
 * its pending signals again: while no thread was the main thread, an
 * eval loop (the child's) may have recomputed the eval breaker without
 * them (3.10-3.12), and signals tripped then would otherwise wait for an
 * unrelated event.  The loop handles signals before pending calls. */
static int vm_rearm_scheduled; /* GIL */

static int
vm_rearm_signals(void *Py_UNUSED(arg))
{
    vm_rearm_scheduled = 0;
    return 0;
}

static void
vm_unlink(vm_ctx *ctx)
{
    for (vm_ctx **p = &vm_running; *p != NULL; p = &(*p)->next) {
        if (*p == ctx) {
            *p = ctx->next;
            return;
        }
    }
}

/* The child left without handing the GIL back (os._exit, os.execv, a
 * signal).  Called with every signal blocked, before anything reuses the
 * child's stack.  Returns 1 when the child's thread state was abandoned. */
static int
vm_recover(vm_ctx *ctx, int stage)
{
    pyclone_gilstate_bind(ctx->caller_ts);
    PyThreadState *cur = pyclone_tstate_unchecked();
    if (cur == ctx->caller_ts) {
        /* the caller still holds the GIL: nothing to take back */
    }
    else if (cur == ctx->child_ts) {
        /* the child died holding the GIL: hand it to the caller */
        PyThreadState_Swap(ctx->caller_ts);
    }
    else {
        /* the child died with the GIL released (or after releasing it on
         * our behalf): wait for it like any thread */
        PyEval_RestoreThread(ctx->caller_ts);
    }
    if (stage == VM_INIT) {
        /* never used: safe to free */
        PyThreadState_Clear(ctx->child_ts);
        PyThreadState_Delete(ctx->child_ts);
        return 0;
    }
    if (stage >= VM_BACK) {
        return 0; /* already cleared and (being) freed by the child */
    }
    pyclone_sever(ctx->child_ts);
    return 1;
}

PyObject *
pyclone_spawn_borrowed(PyObject *module, clone_request *req)
{
    return pyclone_spawn_borrowed_masked(module, req, NULL);
}

PyObject *
pyclone_spawn_borrowed_masked(PyObject *module, clone_request *req,
                              const sigset_t *exec_mask)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t want = req->stack_size > 0 ? (size_t)req->stack_size
                                      : (size_t)VM_DEFAULT_STACK;
    size_t stack_len = (want + page - 1) / page * page + page;
    char *stack = mmap(NULL, stack_len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (mprotect(stack, page, PROT_NONE) < 0) { /* guard page */
        PyErr_SetFromErrno(PyExc_OSError);
        munmap(stack, stack_len);
        return NULL;
    }
    char *stack_top = stack + stack_len;

    if (!vm_hook_installed) {
        if (PySys_AddAuditHook(vm_audit_hook, NULL) < 0) {
            goto fail_stack;
        }
        vm_hook_installed = 1;
    }

    vm_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.fn = req->fn;
    ctx.flags = req->flags;
    ctx.caller_ts = PyThreadState_Get();
    ctx.context = PyContext_CopyCurrent();
    if (ctx.context == NULL) {
        goto fail_stack;
    }
    ctx.child_ts =
        PyThreadState_New(PyThreadState_GetInterpreter(ctx.caller_ts));
    if (ctx.child_ts == NULL) {
        Py_DECREF(ctx.context);
        PyErr_NoMemory();
        goto fail_stack;
    }
    pyclone_set_stack(ctx.child_ts, stack + page, stack_top); /* past the guard */
    Py_INCREF(ctx.fn);

    unsigned long long flags = req->flags & 0xffffffffULL;
    int word = (int)(unsigned int)(flags | (unsigned)(req->exit_signal & 0xff));
    int ptid = -1, ctid = 0, err = 0;

    ctx.next = vm_running;
    vm_running = &ctx;
    /* the child must not collect the caller's garbage: finalizers would
     * act on the child's process (its own fd table, for one) */
    vm_gc_hold();

    /* The child runs with every signal blocked for its whole life, and on
     * a thread state that is not the main thread: it borrows this
     * thread's identity (pthread_self), so if this is the main thread no
     * thread is while the child runs, and the child never runs this
     * process's Python signal handlers or pending calls.  What arrives
     * meanwhile stays pending (in the kernel, or tripped in the shared
     * flags) and is handled here, after the child.  Only an exec lifts
     * the blocking, to exec_mask: a caller that holds signals across the
     * launch (until the pid and pidfd have an owner) passes the mask it
     * had before, which is the one the new program must start with. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &ctx.orig_mask);
    ctx.exec_mask = exec_mask != NULL ? *exec_mask : ctx.orig_mask;
    int withdrawn = pyclone_main_thread_withdraw();
    pid_t pid = vm_do_clone(&ctx, stack_top, word, &ptid, &ctid, &err);
    int stage = __atomic_load_n(&ctx.stage, __ATOMIC_ACQUIRE);
    int abandoned = 0;
    if (pid > 0 && stage == VM_DONE) {
        PyEval_RestoreThread(__atomic_load_n(&ctx.saved, __ATOMIC_ACQUIRE));
    }
    else if (pid > 0) {
        abandoned = vm_recover(&ctx, stage);
    }
    if (withdrawn) {
        pyclone_main_thread_restore();
    }
    pthread_sigmask(SIG_SETMASK, &ctx.orig_mask, NULL);
    if (withdrawn && !vm_rearm_scheduled &&
        Py_AddPendingCall(vm_rearm_signals, NULL) == 0) {
        vm_rearm_scheduled = 1;
    }

    vm_gc_release();
    vm_unlink(&ctx);
    VM_UNPOISON(stack + page, stack_len - page);
    munmap(stack, stack_len); /* after the sever */
    pyclone_vm_free_strings(ctx.exec_argv);
    pyclone_vm_free_strings(ctx.exec_envp);

    if (pid < 0) {
        PyThreadState_Clear(ctx.child_ts);
        PyThreadState_Delete(ctx.child_ts);
        Py_DECREF(ctx.context);
        Py_DECREF(ctx.fn);
        PyMem_RawFree(ctx.exec_path);
        return pyclone_raise_clone_error(module, err, req);
    }
    if (abandoned) {
        /* the dead child's frames may still hold these */
        vm_abandoned++;
        if (PyErr_WarnFormat(
                PyExc_ResourceWarning, 1,
                "CLONE_VM child %d left without returning (os._exit, an "
                "exec or a signal); its thread state was abandoned and "
                "stays allocated; leave through pyclone.child_exit() or "
                "pyclone.child_exec() instead",
                (int)pid) < 0) {
            PyErr_WriteUnraisable(NULL);
        }
    }
    else {
        Py_DECREF(ctx.context);
        Py_DECREF(ctx.fn);
    }

    long threads_left = __atomic_load_n(&ctx.threads_left, __ATOMIC_ACQUIRE);
    if (threads_left > 0 &&
        PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                         "CLONE_VM child %d returned with %ld thread(s) of "
                         "its own still running in this process's memory",
                         (int)pid, threads_left) < 0) {
        PyErr_WriteUnraisable(NULL);
    }

    int pidfd = (flags & F_PIDFD) ? ptid : -1;
    int exec_errno = __atomic_load_n(&ctx.exec_errno, __ATOMIC_ACQUIRE);
    if (ctx.exec_requested && exec_errno != 0) {
        /* like subprocess: the child is gone; reap it and say why */
        if (!(flags & F_PARENT)) {
            while (waitpid(pid, NULL, WALL_OPTION) < 0 && errno == EINTR) {
            }
        }
        vm_close(pidfd);
        PyObject *path = PyUnicode_DecodeFSDefault(ctx.exec_path);
        PyMem_RawFree(ctx.exec_path);
        if (path == NULL) {
            return NULL;
        }
        PyObject *msg = PyUnicode_FromFormat(
            "child_exec: %s(%R) failed in CLONE_VM child %d: %s",
            ctx.exec_step ? ctx.exec_step : "execve", path, (int)pid,
            strerror(exec_errno));
        Py_DECREF(path);
        if (msg != NULL) {
            PyObject *exc = PyObject_CallFunction(PyExc_OSError, "iO",
                                                  exec_errno, msg);
            Py_DECREF(msg);
            if (exc != NULL) {
                PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
                Py_DECREF(exc);
            }
        }
        return NULL;
    }
    PyMem_RawFree(ctx.exec_path);

    if (req->api == API_CLONE) {
        vm_close(pidfd); /* as in the fork-like path */
        return PyLong_FromLong(pid);
    }
    if (!req->want_pidfd) {
        vm_close(pidfd);
        return Py_BuildValue("(iO)", pid, Py_None);
    }
    return Py_BuildValue("(ii)", pid, pidfd);

fail_stack:
    munmap(stack, stack_len);
    return NULL;
}

#else /* !PYCLONE_VM_SUPPORTED */

static vm_ctx *
vm_current_child(void)
{
    return NULL;
}

PyObject *
pyclone_spawn_borrowed(PyObject *module, clone_request *req)
{
    pyclone_vm_check(module, req);
    return NULL;
}

PyObject *
pyclone_spawn_borrowed_masked(PyObject *module, clone_request *req,
                              const sigset_t *Py_UNUSED(exec_mask))
{
    return pyclone_spawn_borrowed(module, req);
}

#endif /* PYCLONE_VM_SUPPORTED */

PyDoc_STRVAR(abandoned_doc,
             "abandoned_thread_states($module, /)\n"
             "--\n\n"
             "How many thread states CLONE_VM children abandoned.\n\n"
             "A child that leaves without returning from its function\n"
             "(os._exit, os.execv, a signal) leaves a thread state with live\n"
             "frames behind; pyclone cuts it loose and keeps it allocated\n"
             "(freeing it could crash the interpreter).  Leave through\n"
             "child_exit()/child_exec() to avoid the leak.");

static PyObject *
pyclone_abandoned(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(arg))
{
    return PyLong_FromSsize_t(vm_abandoned);
}

PyDoc_STRVAR(child_kind_doc,
             "_child_kind($module, /)\n"
             "--\n\n"
             "'vm' in a CLONE_VM child running Python, 'fork' in a fork-like\n"
             "child made by pyclone, else None.");

static PyObject *
pyclone_child_kind(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(arg))
{
    if (vm_current_child() != NULL) {
        return PyUnicode_FromString("vm");
    }
    if (pyclone_in_forklike_child()) {
        return PyUnicode_FromString("fork");
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(vm_supported_doc,
             "_vm_supported($module, /)\n"
             "--\n\n"
             "True if this interpreter can run Python in CLONE_VM children.");

static PyObject *
pyclone_vm_supported(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(arg))
{
    return PyBool_FromLong(PYCLONE_VM_SUPPORTED);
}

PyDoc_STRVAR(tstate_id_doc,
             "_tstate_id($module, /)\n"
             "--\n\n"
             "Address of the current thread state (a test hook).");

static PyObject *
pyclone_tstate_id(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(arg))
{
    return PyLong_FromVoidPtr(PyThreadState_Get());
}

PyMethodDef pyclone_borrowed_methods[] = {
    {"_tstate_id", pyclone_tstate_id, METH_NOARGS, tstate_id_doc},
    {"abandoned_thread_states", pyclone_abandoned, METH_NOARGS,
     abandoned_doc},
    {"_child_kind", pyclone_child_kind, METH_NOARGS, child_kind_doc},
    {"_vm_supported", pyclone_vm_supported, METH_NOARGS, vm_supported_doc},
    {NULL, NULL, 0, NULL},
};

int
pyclone_borrowed_init(PyObject *module)
{
    if (pyclone_vm_exit_request == NULL) {
        pyclone_vm_exit_request = PyErr_NewExceptionWithDoc(
            "pyclone._pyclone.ChildExitRequest",
            "Raised by pyclone.child_exit() in a CLONE_VM child; caught by "
            "pyclone once every frame has unwound.",
            PyExc_BaseException, NULL);
        if (pyclone_vm_exit_request == NULL) {
            return -1;
        }
    }
    if (pyclone_vm_exec_request == NULL) {
        pyclone_vm_exec_request = PyErr_NewExceptionWithDoc(
            "pyclone._pyclone.ChildExecRequest",
            "Raised by pyclone.child_exec() in a CLONE_VM child; caught by "
            "pyclone once every frame has unwound.",
            PyExc_BaseException, NULL);
        if (pyclone_vm_exec_request == NULL) {
            return -1;
        }
    }
    if (PyModule_AddObject(module, "ChildExitRequest",
                           Py_NewRef(pyclone_vm_exit_request)) < 0) {
        Py_DECREF(pyclone_vm_exit_request);
        return -1;
    }
    if (PyModule_AddObject(module, "ChildExecRequest",
                           Py_NewRef(pyclone_vm_exec_request)) < 0) {
        Py_DECREF(pyclone_vm_exec_request);
        return -1;
    }
    return 0;
}
