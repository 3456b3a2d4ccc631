/*
 * borrowed_child.c: the child's side of the borrowed interpreter: the code
 * that runs in a CLONE_VM|CLONE_VFORK child on the caller's interpreter.
 * It swaps a fresh thread state in, runs the callable, hands the GIL back
 * on the suspended caller's behalf, then exits or performs the exec that
 * pyclone.child_exec() requested.
 */
#include "borrowed.h"

#if PYCLONE_VM_SUPPORTED

/* Copy a sequence of bytes objects into a NULL-terminated char* array in
 * raw memory (shared with the parent, which frees it).  NULL on error. */
static char **
vm_copy_strings(PyObject *seq)
{
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of bytes");
    if (fast == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    char **out = PyMem_RawCalloc((size_t)n + 1, sizeof(char *));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(fast, i);
        char *data;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(item, &data, &len) < 0) {
            goto fail;
        }
        if ((Py_ssize_t)strlen(data) != len) {
            PyErr_SetString(PyExc_ValueError, "embedded null byte");
            goto fail;
        }
        out[i] = PyMem_RawMalloc((size_t)len + 1);
        if (out[i] == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        memcpy(out[i], data, (size_t)len + 1);
    }
    Py_DECREF(fast);
    return out;
fail:
    for (Py_ssize_t i = 0; i < n; i++) {
        PyMem_RawFree(out[i]);
    }
    PyMem_RawFree(out);
    Py_DECREF(fast);
    return NULL;
}

void
pyclone_vm_free_strings(char **v)
{
    if (v != NULL) {
        for (char **p = v; *p != NULL; p++) {
            PyMem_RawFree(*p);
        }
        PyMem_RawFree(v);
    }
}

/* The pending exception is an exec request: keep its arguments. */
static int
vm_take_exec_request(vm_ctx *ctx)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    int status = 1;
    PyObject *args = value ? PyObject_GetAttrString(value, "args") : NULL;
    if (args == NULL || !PyTuple_Check(args) || PyTuple_GET_SIZE(args) != 3) {
        PyErr_SetString(PyExc_TypeError, "malformed exec request");
        goto done;
    }
    PyObject *path = PyTuple_GET_ITEM(args, 0);
    if (!PyBytes_Check(path)) {
        PyErr_SetString(PyExc_TypeError, "exec request path must be bytes");
        goto done;
    }
    ctx->exec_path = PyMem_RawMalloc((size_t)PyBytes_GET_SIZE(path) + 1);
    if (ctx->exec_path == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(ctx->exec_path, PyBytes_AS_STRING(path),
           (size_t)PyBytes_GET_SIZE(path) + 1);
    ctx->exec_argv = vm_copy_strings(PyTuple_GET_ITEM(args, 1));
    if (ctx->exec_argv == NULL) {
        goto done;
    }
    ctx->exec_envp = vm_copy_strings(PyTuple_GET_ITEM(args, 2));
    if (ctx->exec_envp == NULL) {
        goto done;
    }
    ctx->exec_requested = 1;
    status = 127; /* if execve fails */
done:
    if (PyErr_Occurred()) {
        PyErr_PrintEx(0);
    }
    Py_XDECREF(args);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return status;
}

static int
vm_status_of(PyObject *r)
{
    if (r == Py_None) {
        return 0;
    }
    if (PyLong_Check(r)) {
        int overflow = 0;
        long v = PyLong_AsLongAndOverflow(r, &overflow);
        if ((v == -1 && PyErr_Occurred()) || overflow) {
            PyErr_Clear();
            return 1;
        }
        return (int)v;
    }
    PySys_WriteStderr(
        "pyclone: the child function returned a %.100s, "
        "expected an int exit status or None\n",
        Py_TYPE(r)->tp_name);
    return 1;
}

/* Run fn() in the copied context and turn the outcome into a status.
 * Never leaves an exception set. */
static int
vm_child_run(vm_ctx *ctx)
{
    int status;
    if (PyContext_Enter(ctx->context) < 0) {
        PyErr_PrintEx(0);
        return 1;
    }
    PyObject *r = PyObject_CallNoArgs(ctx->fn);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyContext_Exit(ctx->context) < 0) {
        PyErr_Clear();
    }
    PyErr_Restore(type, value, tb);
    if (r != NULL) {
        status = vm_status_of(r);
        Py_DECREF(r);
        return status;
    }
    if (PyErr_ExceptionMatches(pyclone_vm_exit_request)) {
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        PyObject *args =
            value ? PyObject_GetAttrString(value, "args") : NULL;
        status = 1;
        if (args != NULL && PyTuple_Check(args) &&
            PyTuple_GET_SIZE(args) == 1) {
            status = vm_status_of(PyTuple_GET_ITEM(args, 0));
        }
        PyErr_Clear();
        Py_XDECREF(args);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return status;
    }
    if (PyErr_ExceptionMatches(pyclone_vm_exec_request)) {
        return vm_take_exec_request(ctx);
    }
    if (PyErr_ExceptionMatches(PyExc_SystemExit)) {
        return pyclone_system_exit_status();
    }
    /* not PyErr_Print(): sys.last_exc is shared with the caller */
    PyErr_PrintEx(0);
    return 1;
}

/* Only async-signal-safe calls from here: no GIL, no Python. */
static void _Py_NO_RETURN
vm_child_exec(vm_ctx *ctx)
{
    if (!(ctx->flags & F_SIGHAND)) {
        /* Our dispositions are a private copy: a handler left installed
         * would run CPython's C handler in the caller's memory if a signal
         * came between the unmask and the exec. */
        for (int sig = 1; sig < NSIG; sig++) {
            struct sigaction sa;
            if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN &&
                sa.sa_handler != SIG_DFL) {
                sa.sa_handler = SIG_DFL;
                sa.sa_flags = 0;
                sigemptyset(&sa.sa_mask);
                (void)sigaction(sig, &sa, NULL);
            }
        }
    }
    (void)syscall(SYS_rt_sigprocmask, SIG_SETMASK, &ctx->exec_mask, NULL,
                  (size_t)(_NSIG / 8));
    (void)syscall(SYS_execve, ctx->exec_path, ctx->exec_argv, ctx->exec_envp);
    __atomic_store_n(&ctx->exec_step, "execve", __ATOMIC_RELAXED);
    __atomic_store_n(&ctx->exec_errno, errno, __ATOMIC_RELEASE);
    for (;;) {
        syscall(SYS_exit, 127);
    }
}

/* The child's entry point, called by glibc's clone() on the child stack.
 * Not inlined: it must not share a frame with the caller's code. */
Py_NO_INLINE int
pyclone_vm_child_main(void *arg)
{
    vm_ctx *ctx = arg;
    __atomic_store_n(&ctx->child_pid, (pid_t)syscall(SYS_getpid),
                     __ATOMIC_RELEASE);
    pyclone_gilstate_bind(ctx->child_ts);
    PyThreadState_Swap(ctx->child_ts);
    __atomic_store_n(&ctx->stage, VM_ATTACHED, __ATOMIC_RELEASE);
    pyclone_tstate_set_native_id(ctx->child_ts);

    int status = vm_child_run(ctx);
    pyclone_flush_std_streams();
    long n = pyclone_count_threads();
    if (n > 1) {
        /* started without Python's thread API (a C library): they keep
         * running in the caller's memory; report it */
        __atomic_store_n(&ctx->threads_left, n - 1, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&ctx->status, status, __ATOMIC_RELEASE);
    __atomic_store_n(&ctx->stage, VM_RETURNED, __ATOMIC_RELEASE);

    PyThreadState_Clear(ctx->child_ts);
    pyclone_gilstate_bind(ctx->caller_ts);
    PyThreadState_Swap(ctx->caller_ts);
    __atomic_store_n(&ctx->stage, VM_BACK, __ATOMIC_RELEASE);
    PyThreadState_Delete(ctx->child_ts);
    PyThreadState *saved = PyEval_SaveThread();
    __atomic_store_n(&ctx->saved, saved, __ATOMIC_RELEASE);
    __atomic_store_n(&ctx->stage, VM_DONE, __ATOMIC_RELEASE);

    if (ctx->exec_requested) {
        vm_child_exec(ctx);
    }
    return status; /* glibc's clone() then calls exit(2) with it */
}

#endif /* PYCLONE_VM_SUPPORTED */
