/*
 * clone.c: the clone() and clone3() entry points: argument conversion into
 * a clone_request, then dispatch by child kind.  The kinds (docs/limits.rst):
 *   action     fn is a pyclone.actions action: run in C on a stack of its
 *              own, valid with any flags the kernel accepts (actions.c);
 *   borrowed   CLONE_VM with a Python callable: runs on the caller's
 *              interpreter while the caller is suspended (borrowed.c);
 *   fork-like  no CLONE_VM: the child gets a copy-on-write image and runs
 *              the callable, exactly as after os.fork() (fork.c).
 */
#include "borrowed.h"

#define MAX_STACK_SIZE (1ULL << 32)

/* Checks, audit event, then the path of the request's child kind.
 * exec_mask (NULL: none given) is what a CLONE_VM child's or an action's
 * exec installs. */
static PyObject *
do_spawn(PyObject *module, clone_request *req, const sigset_t *exec_mask)
{
    ProgramObject *prog = pyclone_action_program(req->fn); /* actions.h */
    if (prog != NULL) {
        PyObject *r = pyclone_spawn_program(module, req, prog, exec_mask);
        Py_DECREF(prog);
        return r;
    }
    if (pyclone_check_request(module, req) < 0) {
        return NULL;
    }
    if (PySys_Audit("pyclone.clone", "sKi", pyclone_api_name(req->api),
                    req->flags, req->exit_signal) < 0) {
        return NULL;
    }
    if (req->flags & F_VM) {
        return pyclone_spawn_borrowed_masked(module, req, exec_mask);
    }
    return pyclone_spawn_forklike(module, req);
}

/* ------------------------------------------------------------------ */
/* Argument conversion */

int
pyclone_convert_flags(PyObject *obj, unsigned long long *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "flags must be an int, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_SetString(PyExc_OverflowError,
                            "flags must fit in 64 unsigned bits");
        }
        return -1;
    }
    *out = v;
    return 0;
}

static int
convert_stack_size(PyObject *obj, Py_ssize_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "stack_size must be an int, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0 || v < 0 || (unsigned long long)v > MAX_STACK_SIZE) {
        PyErr_Format(PyExc_ValueError,
                     "stack_size must be between 0 and %llu bytes",
                     (unsigned long long)MAX_STACK_SIZE);
        return -1;
    }
    *out = (Py_ssize_t)v;
    return 0;
}

/* exec_mask=: None, or an iterable of signal numbers, set bit by bit in
 * the kernel's layout (an array of unsigned long): sigaddset() refuses
 * glibc's internal signals 32 and 33, which a mask read back from the
 * kernel may hold.  Returns 1 with a mask, 0 for None, -1 on error. */
int
pyclone_convert_exec_mask(PyObject *obj, sigset_t *out)
{
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    PyObject *it = PyObject_GetIter(obj);
    if (it == NULL) {
        PyErr_Format(PyExc_TypeError,
                     "exec_mask must be an iterable of signal numbers or "
                     "None, not %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    sigemptyset(out);
    unsigned long *words = (unsigned long *)(void *)out;
    const int bits = (int)(8 * sizeof(unsigned long));
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        int sig = pyclone_as_int(item);
        Py_DECREF(item);
        if (sig == -1 && PyErr_Occurred()) {
            Py_DECREF(it);
            return -1;
        }
        if (sig < 1 || sig >= _NSIG) {
            Py_DECREF(it);
            PyErr_Format(PyExc_ValueError,
                         "exec_mask: %d is not a signal number (1..%d)", sig,
                         _NSIG - 1);
            return -1;
        }
        words[(sig - 1) / bits] |= 1UL << ((sig - 1) % bits);
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 1;
}

PyDoc_STRVAR(
    clone_doc,
    "clone($module, fn, flags, stack_size=0, /, *, allow_threads=False,\n"
    "      exec_mask=None)\n"
    "--\n\n"
    "Create a task with clone(2) running fn() and return its pid.\n\n"
    "The low byte of flags is the exit signal, as in clone(2); bits above\n"
    "the low 32 are refused (clone(2) would drop them: use clone3).\n"
    "fn is called with no arguments in the child; its int return value is\n"
    "the exit status (None means 0), SystemExit is honoured, and any other\n"
    "exception is printed to stderr and gives status 1.  The child never\n"
    "returns into the caller's frames.\n\n"
    "fn may instead be an action (pyclone.actions), run in C on a stack of\n"
    "its own: valid with any flags the kernel accepts (CLONE_VM without\n"
    "CLONE_VFORK, CLONE_THREAD); with CLONE_VFORK a failed step raises\n"
    "pyclone.ActionError here, without it the task exits with status 127.\n\n"
    "Flag sets that plain fork() can serve use fork(); the others use the\n"
    "raw system call, which is refused in a multi-threaded process unless\n"
    "allow_threads=True.  stack_size is unused by fork-like children, which\n"
    "continue on a copy-on-write copy of the caller's stack (it is still\n"
    "checked: 0 to 4 GiB).  With CLONE_PIDFD the descriptor the kernel returns\n"
    "is closed at once: use clone3(pidfd=True) to keep it.\n\n"
    "With CLONE_VM, fn runs on the caller's interpreter in a fresh thread\n"
    "state while the caller is suspended, so CLONE_VFORK is required; its\n"
    "writes to Python objects are the caller's.  It always runs on a stack\n"
    "of its own: 8 MiB for stack_size=0, else a size of at least 8 MiB.\n"
    "See pyclone.child_exit() and pyclone.child_exec().  The child keeps\n"
    "every signal blocked while it runs Python; its exec installs\n"
    "exec_mask (signal numbers), by default the mask of this call.\n\n"
    "Raises OSError with the kernel's errno when the kernel rejects the\n"
    "flags, and UnsupportedFlags for flag sets pyclone refuses.");

static PyObject *
pyclone_clone(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    static const char *const kwlist[] = {"allow_threads", "exec_mask", NULL};
    clone_request req;
    memset(&req, 0, sizeof(req));
    req.api = API_CLONE;
    req.cgroup_fd = -1;

    if (nargs < 2 || nargs > 3) {
        PyErr_Format(PyExc_TypeError,
                     "clone() takes 2 or 3 positional arguments (%zd given)",
                     nargs);
        return NULL;
    }
    sigset_t exec_mask;
    int has_exec_mask = 0;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        if (PyUnicode_Check(key) &&
            PyUnicode_CompareWithASCIIString(key, kwlist[0]) == 0) {
            req.allow_threads = PyObject_IsTrue(args[nargs + i]);
            if (req.allow_threads < 0) {
                return NULL;
            }
        }
        else if (PyUnicode_Check(key) &&
                 PyUnicode_CompareWithASCIIString(key, kwlist[1]) == 0) {
            has_exec_mask = pyclone_convert_exec_mask(args[nargs + i], &exec_mask);
            if (has_exec_mask < 0) {
                return NULL;
            }
        }
        else {
            PyErr_Format(PyExc_TypeError,
                         "clone() got an unexpected keyword argument '%S'",
                         key);
            return NULL;
        }
    }
    req.fn = args[0];
    unsigned long long word;
    if (pyclone_convert_flags(args[1], &word) < 0) {
        return NULL;
    }
    Py_ssize_t stack_size = 0;
    if (nargs == 3 && convert_stack_size(args[2], &stack_size) < 0) {
        return NULL;
    }
    req.stack_size = stack_size;
    if (word >> 32) {
        /* PyUnicode_FromFormat has no %llx before 3.12: spell it here. */
        char high[24];
        snprintf(high, sizeof high, "0x%llx",
                 (unsigned long long)(word >> 32 << 32));
        return pyclone_raise_unsupported(
            module,
            "clone(): flags %s have bits above the low 32, which "
            "clone(2) silently drops (CLONE_CLEAR_SIGHAND, "
            "CLONE_INTO_CGROUP are clone3-only); use clone3()",
            high);
    }
    req.exit_signal = (int)(word & F_CSIGNAL);
    req.flags = word & ~F_CSIGNAL;
    return do_spawn(module, &req, has_exec_mask ? &exec_mask : NULL);
}

static int
convert_set_tid(PyObject *obj, clone_request *req)
{
    PyObject *seq = PySequence_Fast(obj, "set_tid must be a sequence of ints");
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_SET_TID) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError,
                     "set_tid has %zd entries; the kernel allows at most %d "
                     "(one per pid namespace level)",
                     n, MAX_SET_TID);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (v < INT32_MIN || v > INT32_MAX) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_OverflowError,
                            "set_tid entries must fit in a pid_t");
            return -1;
        }
        req->set_tid[i] = (pid_t)v;
    }
    req->set_tid_size = n;
    Py_DECREF(seq);
    return 0;
}

PyDoc_STRVAR(
    clone3_doc,
    "clone3($module, fn, flags=0, /, *, exit_signal=signal.SIGCHLD, pidfd=False,\n"
    "       set_tid=(), cgroup=None, stack_size=0, allow_threads=False,\n"
    "       exec_mask=None)\n"
    "--\n\n"
    "Create a task with clone3(2) running fn(); return (pid, pidfd or None).\n\n"
    "flags is the 64-bit clone_args.flags (no exit signal in it);\n"
    "exit_signal is separate.  pidfd=True sets CLONE_PIDFD and returns the\n"
    "descriptor (close-on-exec), which the caller then owns.  set_tid lists\n"
    "the pids to use, innermost pid namespace first.  cgroup is an open\n"
    "descriptor of a cgroup v2 directory (sets CLONE_INTO_CGROUP).\n"
    "Child semantics are those of clone(), actions included, and so is\n"
    "exec_mask.");

static PyObject *
pyclone_clone3(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fn", "flags", "exit_signal", "pidfd",
                             "set_tid", "cgroup", "stack_size",
                             "allow_threads", "exec_mask", NULL};
    PyObject *fn, *flags_obj = NULL, *set_tid = NULL, *cgroup = Py_None;
    PyObject *stack_obj = NULL, *mask_obj = NULL;
    int exit_signal = SIGCHLD, want_pidfd = 0, allow_threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$ipOOOpO:clone3", kwlist,
                                     &fn, &flags_obj, &exit_signal,
                                     &want_pidfd, &set_tid, &cgroup,
                                     &stack_obj, &allow_threads, &mask_obj)) {
        return NULL;
    }
    sigset_t exec_mask;
    int has_exec_mask = pyclone_convert_exec_mask(mask_obj, &exec_mask);
    if (has_exec_mask < 0) {
        return NULL;
    }
    clone_request req;
    memset(&req, 0, sizeof(req));
    req.api = API_CLONE3;
    req.fn = fn;
    req.cgroup_fd = -1;
    req.want_pidfd = want_pidfd;
    req.allow_threads = allow_threads;
    req.exit_signal = exit_signal;
    if (flags_obj != NULL && pyclone_convert_flags(flags_obj, &req.flags) < 0) {
        return NULL;
    }
    Py_ssize_t stack_size = 0;
    if (stack_obj != NULL && convert_stack_size(stack_obj, &stack_size) < 0) {
        return NULL;
    }
    req.stack_size = stack_size;
    if (exit_signal < 0 || exit_signal > 64) {
        PyErr_Format(PyExc_ValueError,
                     "exit_signal must be 0 or a signal number up to 64, "
                     "not %d",
                     exit_signal);
        return NULL;
    }
    if (set_tid != NULL && convert_set_tid(set_tid, &req) < 0) {
        return NULL;
    }
    if (cgroup != Py_None) {
        int fd = PyObject_AsFileDescriptor(cgroup);
        if (fd < 0) {
            return NULL;
        }
        req.cgroup_fd = fd;
        req.flags |= F_INTO_CGROUP;
    }
    if (want_pidfd) {
        req.flags |= F_PIDFD;
    }
    return do_spawn(module, &req, has_exec_mask ? &exec_mask : NULL);
}

/* The kernel's struct sigaction as rt_sigaction(2) reads it: glibc's
 * sigaction() refuses the signals it keeps for itself (32 and 33), whose
 * disposition the exit-signal check must read too. */
struct kernel_sigaction_ {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
};

PyDoc_STRVAR(
    signal_disposition_doc,
    "_signal_disposition($module, signum, /)\n--\n\n"
    "The caller's disposition of signum as the kernel has it: 0 for\n"
    "SIG_DFL, 1 for SIG_IGN, 2 for a handler (installed from Python or C).");

static PyObject *
pyclone_signal_disposition(PyObject *Py_UNUSED(module), PyObject *arg)
{
    int sig = pyclone_as_int(arg);
    if (sig == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (sig < 1 || sig > 64) {
        PyErr_Format(PyExc_ValueError,
                     "signum must be a signal number in 1..64, not %d", sig);
        return NULL;
    }
    struct kernel_sigaction_ old;
    memset(&old, 0, sizeof(old));
    if (syscall(SYS_rt_sigaction, sig, NULL, &old, sizeof(old.mask)) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (old.handler == (void *)SIG_DFL) {
        return PyLong_FromLong(0);
    }
    return PyLong_FromLong(old.handler == (void *)SIG_IGN ? 1 : 2);
}

PyMethodDef pyclone_clone_methods[] = {
    {"_signal_disposition", pyclone_signal_disposition, METH_O,
     signal_disposition_doc},
    {"clone", (PyCFunction)(void (*)(void))pyclone_clone,
     METH_FASTCALL | METH_KEYWORDS, clone_doc},
    {"clone3", (PyCFunction)(void (*)(void))pyclone_clone3,
     METH_VARARGS | METH_KEYWORDS, clone3_doc},
    {NULL, NULL, 0, NULL},
};
