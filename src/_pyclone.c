/*
 * _pyclone: thin bindings for clone(2), clone3(2) and kcmp(2).
 *
 * The C layer converts arguments, issues the system call and maps errors.
 * Policy (presets, names, waiting, result transport) lives in the Python
 * package.  The checks that are here are the ones without which a call
 * could corrupt or hang the calling interpreter: they must hold even for
 * callers that use this module directly.
 *
 * Child classes (see docs/limits.rst):
 *   fork-like  no CLONE_VM: the child gets a copy-on-write image and runs a
 *              Python callable, exactly as after os.fork().
 *   shared-VM / thread: filled in by the "actions" and "borrowed
 *              interpreter" paths; refused with UnsupportedFlags otherwise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h> /* first: pyconfig.h defines _GNU_SOURCE */

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef __linux__
#error "pyclone only supports Linux"
#endif

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_kcmp
#define SYS_kcmp 312
#endif
#ifndef PR_GET_TID_ADDRESS
#define PR_GET_TID_ADDRESS 40
#endif

/* ------------------------------------------------------------------ */
/* Flag constants: the kernel's values (ABI, include/uapi/linux/sched.h) */

#define F_CSIGNAL 0x000000ffULL
#define F_NEWTIME 0x00000080ULL
#define F_VM 0x00000100ULL
#define F_FS 0x00000200ULL
#define F_FILES 0x00000400ULL
#define F_SIGHAND 0x00000800ULL
#define F_PIDFD 0x00001000ULL
#define F_PTRACE 0x00002000ULL
#define F_VFORK 0x00004000ULL
#define F_PARENT 0x00008000ULL
#define F_THREAD 0x00010000ULL
#define F_NEWNS 0x00020000ULL
#define F_SYSVSEM 0x00040000ULL
#define F_SETTLS 0x00080000ULL
#define F_PARENT_SETTID 0x00100000ULL
#define F_CHILD_CLEARTID 0x00200000ULL
#define F_DETACHED 0x00400000ULL
#define F_UNTRACED 0x00800000ULL
#define F_CHILD_SETTID 0x01000000ULL
#define F_NEWCGROUP 0x02000000ULL
#define F_NEWUTS 0x04000000ULL
#define F_NEWIPC 0x08000000ULL
#define F_NEWUSER 0x10000000ULL
#define F_NEWPID 0x20000000ULL
#define F_NEWNET 0x40000000ULL
#define F_IO 0x80000000ULL
#define F_CLEAR_SIGHAND 0x100000000ULL
#define F_INTO_CGROUP 0x200000000ULL

#define WALL_OPTION 0x40000000 /* __WALL */

/* Cross-check against the C library's headers where they define a flag. */
#ifdef CLONE_VM
_Static_assert(CLONE_VM == F_VM, "CLONE_VM");
#endif
#ifdef CLONE_NEWTIME
_Static_assert(CLONE_NEWTIME == F_NEWTIME, "CLONE_NEWTIME");
#endif
#ifdef CLONE_PIDFD
_Static_assert(CLONE_PIDFD == F_PIDFD, "CLONE_PIDFD");
#endif
#ifdef CLONE_NEWCGROUP
_Static_assert(CLONE_NEWCGROUP == F_NEWCGROUP, "CLONE_NEWCGROUP");
#endif

typedef struct {
    const char *name;
    unsigned long long value;
} flag_def;

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

/* struct clone_args, VER2 (88 bytes). Declared here so that old headers
 * do not matter. */
struct pyclone_clone_args {
    uint64_t flags;
    uint64_t pidfd;
    uint64_t child_tid;
    uint64_t parent_tid;
    uint64_t exit_signal;
    uint64_t stack;
    uint64_t stack_size;
    uint64_t tls;
    uint64_t set_tid;
    uint64_t set_tid_size;
    uint64_t cgroup;
};
_Static_assert(sizeof(struct pyclone_clone_args) == 88, "clone_args VER2");

#define MAX_SET_TID 32 /* MAX_PID_NS_LEVEL */
#define MAX_STACK_SIZE (1ULL << 32)

/* ------------------------------------------------------------------ */
/* Module state */

typedef struct {
    PyObject *UnsupportedFlags; /* ValueError subclass */
    PyObject *error_hook;       /* callable(errno, flags, api, exit_signal) */
} module_state;

static inline module_state *
get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* ------------------------------------------------------------------ */
/* Small helpers */

static int
is_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

/* Number of threads of this process (field 20 of /proc/self/stat), or -1. */
static long
count_threads(void)
{
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    ssize_t n;
    do {
        n = read(fd, buf, sizeof(buf) - 1);
    } while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0) {
        return -1;
    }
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* comm may contain spaces */
    if (p == NULL) {
        return -1;
    }
    /* after ")": " state ppid pgrp ..."; num_threads is field 20, i.e. the
     * 18th field after comm. */
    int field = 2;
    for (p++; *p && field < 20; p++) {
        if (*p == ' ') {
            field++;
        }
    }
    return field == 20 ? strtol(p, NULL, 10) : -1;
}

static void
flush_std_streams(void)
{
    static const char *names[] = {"stdout", "stderr"};
    for (size_t i = 0; i < 2; i++) {
        PyObject *f = PySys_GetObject(names[i]); /* borrowed */
        if (f != NULL && f != Py_None) {
            PyObject *r = PyObject_CallMethod(f, "flush", NULL);
            if (r == NULL) {
                PyErr_Clear();
            }
            Py_XDECREF(r);
        }
    }
}

/* Exit status for a pending SystemExit, following Python's own rules:
 * None -> 0, int -> int, anything else printed to stderr -> 1. */
static int
system_exit_status(void)
{
    PyObject *type, *value, *tb;
#if PY_VERSION_HEX >= 0x030C0000
    value = PyErr_GetRaisedException();
    type = NULL;
    tb = NULL;
#else
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
#endif
    int status = 1;
    PyObject *code = value ? PyObject_GetAttrString(value, "code") : NULL;
    if (code == NULL) {
        PyErr_Clear();
    }
    else if (code == Py_None) {
        status = 0;
    }
    else if (PyLong_Check(code)) {
        int overflow = 0;
        long v = PyLong_AsLongAndOverflow(code, &overflow);
        status = (v == -1 && PyErr_Occurred()) || overflow ? 1 : (int)v;
        PyErr_Clear();
    }
    else {
        PyObject *s = PyObject_Str(code);
        if (s != NULL) {
            const char *text = PyUnicode_AsUTF8(s);
            if (text != NULL) {
                PySys_WriteStderr("%s\n", text);
            }
        }
        Py_XDECREF(s);
        PyErr_Clear();
    }
    Py_XDECREF(code);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return status;
}

/* Pid of this process if it is a fork-like child made by pyclone (for
 * pyclone.child_exit/child_exec), else 0. */
static pid_t forklike_child_pid;

/* Run fn() in a fork-like child and never return. */
static void _Py_NO_RETURN
child_run_callable(PyObject *fn)
{
    int status;
    forklike_child_pid = getpid();
    PyObject *r = PyObject_CallNoArgs(fn);
    if (r == NULL) {
        if (PyErr_ExceptionMatches(PyExc_SystemExit)) {
            status = system_exit_status();
        }
        else {
            PyErr_Print();
            status = 1;
        }
    }
    else if (r == Py_None) {
        status = 0;
    }
    else if (PyLong_Check(r)) {
        int overflow = 0;
        long v = PyLong_AsLongAndOverflow(r, &overflow);
        status = (v == -1 && PyErr_Occurred()) || overflow ? 1 : (int)v;
        PyErr_Clear();
    }
    else {
        PySys_WriteStderr(
            "pyclone: the child function returned a %.100s, "
            "expected an int exit status or None\n",
            Py_TYPE(r)->tp_name);
        status = 1;
    }
    Py_XDECREF(r);
    flush_std_streams();
    _exit(status);
}

/* ------------------------------------------------------------------ */
/* Request description shared by clone() and clone3() */

enum api_kind { API_CLONE = 0, API_CLONE3 = 1 };

typedef struct {
    enum api_kind api;
    PyObject *fn;
    unsigned long long flags;   /* without the exit signal (clone3 form) */
    int exit_signal;            /* legacy: low byte of flags */
    int want_pidfd;             /* clone3(pidfd=True) */
    pid_t set_tid[MAX_SET_TID];
    Py_ssize_t set_tid_size;
    int cgroup_fd;              /* -1 when not used */
    int allow_threads;
    Py_ssize_t stack_size;      /* 0: default */
} clone_request;

static const char *
api_name(enum api_kind api)
{
    return api == API_CLONE ? "clone" : "clone3";
}

static PyObject *
raise_unsupported(PyObject *module, const char *fmt, ...)
{
    va_list va;
    va_start(va, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    if (msg != NULL) {
        PyErr_SetObject(get_state(module)->UnsupportedFlags, msg);
        Py_DECREF(msg);
    }
    return NULL;
}

/* Raise OSError(err) for a failed syscall, through the Python error hook
 * when the package installed one (it names the kernel rule). */
static PyObject *
raise_clone_error(PyObject *module, int err, const clone_request *req)
{
    module_state *st = get_state(module);
    unsigned long long word = req->flags;
    if (req->api == API_CLONE) {
        word |= (unsigned long long)(req->exit_signal & 0xff);
    }
    if (st->error_hook != NULL) {
        PyObject *exc = PyObject_CallFunction(
            st->error_hook, "iKsi", err, word, api_name(req->api),
            req->exit_signal);
        if (exc == NULL) {
            return NULL;
        }
        if (PyExceptionInstance_Check(exc)) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
            return NULL;
        }
        Py_DECREF(exc);
    }
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* ================================================================== */
/* Borrowed interpreter: a Python callable in a CLONE_VM child.
 *
 * The child shares the caller's memory, so it cannot have an interpreter
 * of its own: it borrows the caller's.  That is only safe while the caller
 * is suspended, i.e. with CLONE_VFORK, and only on GIL builds whose thread
 * state layout we know (3.10 to 3.13).  The sequence (measured design, see
 * docs/limits.rst):
 *
 *   parent: create a fresh PyThreadState for the child; block every
 *           signal; glibc clone() with a stack carved below the caller's
 *           own stack pointer (or an mmap'ed one) and vm_child_main as the
 *           function.  The caller sleeps in the kernel until the child
 *           execs or exits.
 *   child:  swap the fresh thread state in, run fn() with signals still
 *           blocked, swap the caller's back, free the fresh one, and
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

#include "_pyclone_internal.h"
#include <pthread.h>
#include <sys/mman.h>

#ifndef Py_NO_INLINE /* 3.10 */
#define Py_NO_INLINE __attribute__((noinline))
#endif

#if !defined(Py_GIL_DISABLED) && PY_VERSION_HEX >= 0x030A0000 && \
    PY_VERSION_HEX < 0x030E0000
#define VM_SUPPORTED 1
#else
#define VM_SUPPORTED 0
#endif

/* Room left between the caller's stack pointer and the child's stack: the
 * parent's path into the kernel (the clone wrapper, a lazy PLT resolve with
 * its xsave area, a signal frame) must not reach the child's frames. */
#define VM_STACK_GAP (64 * 1024)
/* Smallest child stack on the caller's stack before we refuse. */
#define VM_MIN_CALLER_STACK (1024 * 1024)
/* Smallest separate stack: the main thread's default (RLIMIT_STACK); with
 * less, deep C recursion overflows before the interpreter's counters. */
#define VM_MIN_MMAP_STACK (8 * 1024 * 1024)

enum vm_stage {
    VM_INIT = 0,     /* child has not swapped its thread state in */
    VM_ATTACHED = 1, /* child is running Python */
    VM_RETURNED = 2, /* fn() is over; the child is tearing down */
    VM_BACK = 3,     /* the caller's thread state is current again */
    VM_DONE = 4,     /* GIL released on the caller's behalf */
};

typedef struct vm_ctx {
    PyObject *fn;
    PyObject *context;           /* copy of the caller's contextvars */
    PyThreadState *caller_ts;
    PyThreadState *child_ts;
    unsigned long long flags;
    sigset_t orig_mask;
    struct vm_ctx *next;         /* list of children running now */
    /* written by the child; read with __atomic loads (H20) */
    int stage;
    pid_t child_pid;
    PyThreadState *saved;        /* the caller's, from PyEval_SaveThread */
    int status;
    int exec_requested;
    char *exec_path;             /* PyMem_RawMalloc'ed by the child */
    char **exec_argv;
    char **exec_envp;
    int exec_errno;
    const char *exec_step;
    long threads_left;           /* threads the child left running */
} vm_ctx;

/* Protected by the GIL. */
static vm_ctx *vm_running;
static Py_ssize_t vm_abandoned;
static int vm_gc_users;
static int vm_gc_was_enabled;
static int vm_hook_installed;
static PyObject *vm_ExitRequest; /* BaseException subclasses */
static PyObject *vm_ExecRequest;

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

static int
vm_check(PyObject *module, const clone_request *req)
{
    unsigned long long f = req->flags;
#if !VM_SUPPORTED
    (void)f;
#ifdef Py_GIL_DISABLED
    raise_unsupported(
        module,
        "CLONE_VM with a Python callable is refused on free-threaded "
        "builds: the child would run concurrently with the caller's other "
        "threads on a borrowed thread identity; drop CLONE_VM or use a "
        "pyclone.actions action");
#else
    raise_unsupported(
        module,
        "CLONE_VM with a Python callable is not supported on Python %d.%d: "
        "pyclone only knows how to borrow the interpreter safely on "
        "3.10-3.13; drop CLONE_VM or use a pyclone.actions action",
        PY_MAJOR_VERSION, PY_MINOR_VERSION);
#endif
    return -1;
#else
    if (!(f & F_VFORK)) {
        raise_unsupported(
            module,
            "CLONE_VM without CLONE_VFORK with a Python callable is refused: "
            "the child would run Python in the caller's memory while the "
            "caller runs too; add CLONE_VFORK (the caller then waits until "
            "the child exits or execs) or use a pyclone.actions action");
        return -1;
    }
    if ((f & F_SIGHAND) && (f & F_NEWPID)) {
        raise_unsupported(
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
            raise_unsupported(
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
                     "(run on the caller's stack) or at least %d bytes",
                     req->stack_size, VM_MIN_MMAP_STACK);
        return -1;
    }
    (void)module;
    return 0;
#endif
}

#if VM_SUPPORTED

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

static void
vm_free_strings(char **v)
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
    if (PyErr_ExceptionMatches(vm_ExitRequest)) {
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
    if (PyErr_ExceptionMatches(vm_ExecRequest)) {
        return vm_take_exec_request(ctx);
    }
    if (PyErr_ExceptionMatches(PyExc_SystemExit)) {
        return system_exit_status();
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
    (void)syscall(SYS_rt_sigprocmask, SIG_SETMASK, &ctx->orig_mask, NULL,
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
static Py_NO_INLINE int
vm_child_main(void *arg)
{
    vm_ctx *ctx = arg;
    __atomic_store_n(&ctx->child_pid, (pid_t)syscall(SYS_getpid),
                     __ATOMIC_RELEASE);
    pyclone_gilstate_bind(ctx->child_ts);
    PyThreadState_Swap(ctx->child_ts);
    __atomic_store_n(&ctx->stage, VM_ATTACHED, __ATOMIC_RELEASE);
#if PY_VERSION_HEX >= 0x030B0000
    ctx->child_ts->native_thread_id = (unsigned long)syscall(SYS_gettid);
#endif

    int status = vm_child_run(ctx);
    flush_std_streams();
    long n = count_threads();
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

/* Issue the clone.  Not inlined, so that its frame (and everything the
 * parent runs until the child is gone) stays above the child's stack. */
static Py_NO_INLINE pid_t
vm_do_clone(vm_ctx *ctx, char *stack_top, int word, int *ptid, int *ctid,
            int *err)
{
    if (stack_top == NULL) {
        char *here = (char *)__builtin_frame_address(0);
        stack_top = (char *)(((uintptr_t)(here - VM_STACK_GAP)) &
                             ~(uintptr_t)63);
    }
    pid_t pid = clone(vm_child_main, stack_top, word, ctx, ptid, NULL, ctid);
    if (pid < 0) {
        *err = errno; /* errno is shared with the child: read it now only */
    }
    return pid;
}

/* Bytes of stack left below the caller's stack pointer, or -1. */
static Py_NO_INLINE Py_ssize_t
vm_caller_stack_room(void)
{
    pthread_attr_t attr;
    void *lo;
    size_t size;
    if (pthread_getattr_np(pthread_self(), &attr) != 0) {
        return -1;
    }
    int rc = pthread_attr_getstack(&attr, &lo, &size);
    size_t guard = 0;
    (void)pthread_attr_getguardsize(&attr, &guard);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        return -1;
    }
    char *here = (char *)__builtin_frame_address(0);
    char *low = (char *)lo + guard;
    return here > low ? (Py_ssize_t)(here - low) - 2 * VM_STACK_GAP : -1;
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

static PyObject *
spawn_borrowed(PyObject *module, clone_request *req)
{
    char *stack = NULL;
    size_t stack_len = 0;
    char *stack_top = NULL;

    if (req->stack_size > 0) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        stack_len = ((size_t)req->stack_size + page - 1) / page * page + page;
        stack = mmap(NULL, stack_len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (mprotect(stack, page, PROT_NONE) < 0) { /* guard page */
            PyErr_SetFromErrno(PyExc_OSError);
            munmap(stack, stack_len);
            return NULL;
        }
        stack_top = stack + stack_len;
    }
    else {
        Py_ssize_t room = vm_caller_stack_room();
        if (room >= 0 && room < VM_MIN_CALLER_STACK) {
            PyErr_Format(
                PyExc_RuntimeError,
                "only %zd KiB of stack are left below this call, too little "
                "for a Python child on the caller's stack; pass stack_size "
                ">= %d to give the child a stack of its own",
                room / 1024, VM_MIN_MMAP_STACK);
            return NULL;
        }
    }

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
    Py_INCREF(ctx.fn);

    unsigned long long flags = req->flags & 0xffffffffULL;
    int word = (int)(unsigned int)(flags | (unsigned)(req->exit_signal & 0xff));
    int ptid = -1, ctid = 0, err = 0;

    ctx.next = vm_running;
    vm_running = &ctx;
    /* the child must not collect the caller's garbage: finalizers would
     * act on the child's process (its own fd table, for one) */
    vm_gc_hold();

    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &ctx.orig_mask);
    pid_t pid = vm_do_clone(&ctx, stack_top, word, &ptid, &ctid, &err);
    int stage = __atomic_load_n(&ctx.stage, __ATOMIC_ACQUIRE);
    int abandoned = 0;
    if (pid > 0 && stage == VM_DONE) {
        PyEval_RestoreThread(__atomic_load_n(&ctx.saved, __ATOMIC_ACQUIRE));
    }
    else if (pid > 0) {
        abandoned = vm_recover(&ctx, stage);
    }
    pthread_sigmask(SIG_SETMASK, &ctx.orig_mask, NULL);

    vm_gc_release();
    vm_unlink(&ctx);
    if (stack != NULL) {
        munmap(stack, stack_len); /* after the sever */
    }
    vm_free_strings(ctx.exec_argv);
    vm_free_strings(ctx.exec_envp);

    if (pid < 0) {
        PyThreadState_Clear(ctx.child_ts);
        PyThreadState_Delete(ctx.child_ts);
        Py_DECREF(ctx.context);
        Py_DECREF(ctx.fn);
        PyMem_RawFree(ctx.exec_path);
        return raise_clone_error(module, err, req);
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
    if (stack != NULL) {
        munmap(stack, stack_len);
    }
    return NULL;
}

#else /* !VM_SUPPORTED */

static vm_ctx *vm_running;
static Py_ssize_t vm_abandoned;
static PyObject *vm_ExitRequest;
static PyObject *vm_ExecRequest;

static vm_ctx *
vm_current_child(void)
{
    return NULL;
}

static PyObject *
spawn_borrowed(PyObject *module, clone_request *req)
{
    vm_check(module, req);
    return NULL;
}

#endif /* VM_SUPPORTED */

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
    if (forklike_child_pid != 0 && forklike_child_pid == getpid()) {
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
    return PyBool_FromLong(VM_SUPPORTED);
}

#define VM_METHODS                                                          \
    {"abandoned_thread_states", pyclone_abandoned, METH_NOARGS,             \
     abandoned_doc},                                                        \
    {"_child_kind", pyclone_child_kind, METH_NOARGS, child_kind_doc},       \
    {"_vm_supported", pyclone_vm_supported, METH_NOARGS, vm_supported_doc},

static int
vm_module_init(PyObject *module)
{
    if (vm_ExitRequest == NULL) {
        vm_ExitRequest = PyErr_NewExceptionWithDoc(
            "pyclone._pyclone.ChildExitRequest",
            "Raised by pyclone.child_exit() in a CLONE_VM child; caught by "
            "pyclone once every frame has unwound.",
            PyExc_BaseException, NULL);
        if (vm_ExitRequest == NULL) {
            return -1;
        }
    }
    if (vm_ExecRequest == NULL) {
        vm_ExecRequest = PyErr_NewExceptionWithDoc(
            "pyclone._pyclone.ChildExecRequest",
            "Raised by pyclone.child_exec() in a CLONE_VM child; caught by "
            "pyclone once every frame has unwound.",
            PyExc_BaseException, NULL);
        if (vm_ExecRequest == NULL) {
            return -1;
        }
    }
    if (PyModule_AddObject(module, "ChildExitRequest",
                           Py_NewRef(vm_ExitRequest)) < 0) {
        Py_DECREF(vm_ExitRequest);
        return -1;
    }
    if (PyModule_AddObject(module, "ChildExecRequest",
                           Py_NewRef(vm_ExecRequest)) < 0) {
        Py_DECREF(vm_ExecRequest);
        return -1;
    }
    return 0;
}

/* End of the borrowed-interpreter section. */
/* ================================================================== */

/* Checks that keep the caller safe. Returns 0, or -1 with an exception. */
static int
check_request(PyObject *module, clone_request *req)
{
    unsigned long long f = req->flags;

    if (!PyCallable_Check(req->fn)) {
        PyErr_Format(PyExc_TypeError,
                     "%s() argument 'fn' must be callable, not %.100s",
                     api_name(req->api), Py_TYPE(req->fn)->tp_name);
        return -1;
    }
    if (f & F_SETTLS) {
        raise_unsupported(
            module,
            "CLONE_SETTLS is refused: the child would need a thread control "
            "block that only the C library can build; use threading.Thread "
            "for a thread, or drop CLONE_SETTLS");
        return -1;
    }
    if (f & F_THREAD) {
        raise_unsupported(
            module,
            "CLONE_THREAD with a Python callable is refused: the thread "
            "would share the caller's thread pointer, and any exit or exec "
            "in it would end the whole process; use threading.Thread, or a "
            "pyclone.actions action as the child");
        return -1;
    }
    if ((f & F_VM) && vm_check(module, req) < 0) {
        return -1;
    }
    if (!Py_IsInitialized() || is_finalizing()) {
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

/* Can glibc's fork() do exactly what is asked?  Then it is the safest way:
 * it runs the atfork handlers and takes the malloc and stdio locks. */
static int
is_plain_fork(const clone_request *req)
{
    unsigned long long extra =
        req->flags & ~(F_CHILD_SETTID | F_CHILD_CLEARTID | F_PIDFD);
    if (req->api == API_CLONE && (req->flags & F_PIDFD)) {
        return 0;
    }
    return extra == 0 && req->exit_signal == SIGCHLD && req->set_tid_size == 0 &&
           req->cgroup_fd < 0;
}

static int
pidfd_open_raw(pid_t pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* The legacy clone syscall's argument order differs between architectures. */
static long
raw_clone_nostack(unsigned long flags, int *ptid, int *ctid)
{
#if defined(__s390__) || defined(__CRIS__)
    return syscall(SYS_clone, 0UL, flags, ptid, ctid, 0UL);
#elif defined(__x86_64__) || defined(__sparc__) || defined(__loongarch__) || \
    defined(__riscv)
    return syscall(SYS_clone, flags, 0UL, ptid, ctid, 0UL);
#else /* CONFIG_CLONE_BACKWARDS: arm, arm64, i386, powerpc, mips */
    return syscall(SYS_clone, flags, 0UL, ptid, 0UL, ctid);
#endif
}

static void
close_quietly(int fd)
{
    if (fd >= 0) {
        int saved = errno;
        close(fd);
        errno = saved;
    }
}

/* Block until the child execs or exits: the read end sees EOF when the
 * child's close-on-exec write end goes away.  Called without the GIL. */
static void
wait_vfork_pipe(int rfd)
{
    char c;
    ssize_t n;
    do {
        n = read(rfd, &c, 1);
    } while (n > 0 || (n < 0 && errno == EINTR));
}

/* The fork-like path: the child continues on a private copy of this stack. */
static PyObject *
spawn_forklike(PyObject *module, clone_request *req)
{
    int plain = is_plain_fork(req);
    pid_t pid;
    int err = 0;
    int pidfd = -1;
    int vfork_pipe[2] = {-1, -1};
    unsigned long long flags = req->flags;

    if (!plain) {
        if (!req->allow_threads) {
            long n = count_threads();
            if (n > 1) {
                PyErr_Format(
                    PyExc_RuntimeError,
                    "%s(): this process has %ld threads; a raw clone does not "
                    "take the C library's malloc and stdio locks, so the "
                    "child could deadlock in malloc. Create tasks before "
                    "starting threads, use flags that plain fork() can "
                    "serve, or pass allow_threads=True to take the risk",
                    api_name(req->api), n);
                return NULL;
            }
        }
        /* CLONE_VFORK without CLONE_VM would stop every other Python thread
         * while the caller holds the GIL in the kernel: emulate it.  With
         * CLONE_FILES the pipe cannot work (one shared fd table), so the
         * kernel's own vfork wait is kept. */
        if ((flags & F_VFORK) && !(flags & F_FILES)) {
            if (pipe2(vfork_pipe, O_CLOEXEC) < 0) {
                return PyErr_SetFromErrno(PyExc_OSError);
            }
            flags &= ~F_VFORK;
        }
    }

    int *tid_addr = NULL;
    if (!plain && prctl(PR_GET_TID_ADDRESS, &tid_addr) == 0 &&
        tid_addr != NULL) {
        /* make glibc's cached thread id right in the child */
        flags |= F_CHILD_SETTID | F_CHILD_CLEARTID;
    }
    else {
        flags &= ~(F_CHILD_SETTID | F_CHILD_CLEARTID);
        tid_addr = NULL;
    }

    sigset_t all, old;
    sigfillset(&all);

    PyOS_BeforeFork();
    if (plain) {
        pid = fork();
        err = errno;
    }
    else {
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int ptid = -1;
        if (req->api == API_CLONE) {
            pid = (pid_t)raw_clone_nostack(
                (unsigned long)(flags | (unsigned)(req->exit_signal & 0xff)),
                &ptid, tid_addr);
            err = errno;
            if (pid > 0 && (flags & F_PIDFD)) {
                pidfd = ptid;
            }
        }
        else {
            struct pyclone_clone_args args;
            memset(&args, 0, sizeof(args));
            args.flags = flags;
            args.exit_signal = (uint64_t)req->exit_signal;
            args.child_tid = (uint64_t)(uintptr_t)tid_addr;
            args.parent_tid = (uint64_t)(uintptr_t)&ptid;
            args.pidfd = (uint64_t)(uintptr_t)&pidfd;
            if (req->set_tid_size > 0) {
                args.set_tid = (uint64_t)(uintptr_t)req->set_tid;
                args.set_tid_size = (uint64_t)req->set_tid_size;
            }
            if (req->cgroup_fd >= 0) {
                args.cgroup = (uint64_t)req->cgroup_fd;
            }
            pid = (pid_t)syscall(SYS_clone3, &args, sizeof(args));
            err = errno;
        }
        if (pid != 0) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
        }
    }

    if (pid == 0) {
        /* child */
        PyOS_AfterFork_Child();
        if (!plain) {
            pthread_sigmask(SIG_SETMASK, &old, NULL);
        }
        close_quietly(vfork_pipe[0]);
        if (flags & F_FILES) {
            /* the fd table is the caller's: a collected socket would close
             * the caller's descriptor */
            PyGC_Disable();
        }
        child_run_callable(req->fn);
    }

    PyOS_AfterFork_Parent();
    close_quietly(vfork_pipe[1]);
    if (pid < 0) {
        close_quietly(vfork_pipe[0]);
        return raise_clone_error(module, err, req);
    }
    if (vfork_pipe[0] >= 0) {
        Py_BEGIN_ALLOW_THREADS
        wait_vfork_pipe(vfork_pipe[0]);
        Py_END_ALLOW_THREADS
        close(vfork_pipe[0]);
    }
    if (plain && req->want_pidfd) {
        /* pid is our unreaped child: it cannot be recycled, no race */
        pidfd = pidfd_open_raw(pid);
        if (pidfd < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            kill(pid, SIGKILL);
            while (waitpid(pid, NULL, WALL_OPTION) < 0 && errno == EINTR) {
            }
            return NULL;
        }
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (plain) {
        /* os.fork() warns when the process has threads (gh-100228) */
        long n = count_threads();
        if (n > 1 &&
            PyErr_WarnFormat(PyExc_DeprecationWarning, 1,
                             "This process is multi-threaded, use of "
                             "%s() may lead to deadlocks in the child.",
                             api_name(req->api)) < 0) {
            PyErr_Clear(); /* like os.fork: never fail after the child exists */
        }
    }
#endif
    if (req->api == API_CLONE) {
        close_quietly(pidfd); /* legacy clone(): see the docstring */
        return PyLong_FromLong(pid);
    }
    if (!req->want_pidfd) {
        close_quietly(pidfd);
        return Py_BuildValue("(iO)", pid, Py_None);
    }
    return Py_BuildValue("(ii)", pid, pidfd);
}

/* ================================================================== */
/* Actions: C-level children on a stack of their own (issue 4, part 1) */
/*                                                                    */
/* An action is a flat program of raw system calls compiled before    */
/* the clone (class _Program).  The child starts on an mmap'd stack   */
/* with a guard page, runs the program without touching libc or       */
/* Python state (no errno, no TLS, no locks: valid with CLONE_VM and  */
/* CLONE_THREAD, with or without CLONE_VFORK), and ends with SYS_exit */
/* -- it never returns into the caller's frames.  It reports through  */
/* a MAP_SHARED page (struct act_page), which the parent sees for     */
/* shared-VM and copy children alike; the page also holds the         */
/* CLONE_CHILD_SETTID/CLEARTID word used to join threads and to know  */
/* when a shared-VM child has left its stack.  A stack is reused or   */
/* unmapped only after the kernel cleared that word (CLONE_VM) or at  */
/* once (copy children have their own copy of it).                    */
/* ================================================================== */

#include <linux/futex.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/mman.h>
#include <time.h>

extern char **environ;

#if defined(__x86_64__)
#define ACT_ASM_CLONE 1
/* A system call that returns -errno and never touches errno (TLS). */
static inline long
act_sys(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8),
                       "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

/* clone (nr = SYS_clone: a1 flags, a2 stack pointer, a3 ptid, a4 ctid,
 * a5 tls) or clone3 (a1 args, a2 size).  The parent stored fn and arg at
 * the child's stack pointer; the child pops them, calls fn(arg) and ends
 * with SYS_exit(fn's value). */
static long __attribute__((noinline))
act_clone_asm(long nr, long a1, long a2, long a3, long a4, long a5)
{
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    long ret;
    __asm__ volatile("syscall\n\t"
                     "testq %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xorl %%ebp, %%ebp\n\t"
                     "popq %%rax\n\t"
                     "popq %%rdi\n\t"
                     "andq $-16, %%rsp\n\t"
                     "callq *%%rax\n\t"
                     "movl %%eax, %%edi\n\t"
                     "movl %[exit], %%eax\n\t"
                     "syscall\n\t"
                     "hlt\n\t"
                     "1:\n\t"
                     : "=a"(ret)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8),
                       [exit] "i"(SYS_exit)
                     : "rcx", "r11", "memory");
    return ret;
}

static inline void
act_copy(char *dst, const char *src, size_t n)
{
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}
#else
#define ACT_ASM_CLONE 0
/* Elsewhere: syscall(), whose errno write races with a concurrently
 * running caller on the shared thread pointer (documented). */
static long
act_sys(long n, long a, long b, long c, long d, long e, long f)
{
    long r = syscall(n, a, b, c, d, e, f);
    return r == -1 ? -errno : r;
}

static void
act_copy(char *dst, const char *src, size_t n)
{
    volatile char *d = dst;
    for (size_t i = 0; i < n; i++) {
        d[i] = src[i];
    }
}
#endif

/* PyLong_AsInt is 3.13+ */
static int
act_as_int(PyObject *obj)
{
    long v = PyLong_AsLong(obj);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < INT32_MIN || v > INT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "value does not fit in a C int");
        return -1;
    }
    return (int)v;
}

#define ACT_STORE(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELEASE)
#define ACT_LOAD(field) __atomic_load_n(&(field), __ATOMIC_ACQUIRE)

enum act_opcode {
    OP_EXIT,
    OP_SLEEP,
    OP_WRITE,
    OP_CHDIR,
    OP_CLOSE,
    OP_IGNORE_SIGNAL,
    OP_EXEC,
};

struct act_op {
    int code;
    long num; /* exit code, fd, signal number */
    struct timespec ts;
    char *dst;
    const char *src;
    size_t len;
    const char *path;
    char *const *argv;
    char *const *envp; /* NULL: the caller's environ at spawn time */
};

/* What the child reports.  ACT_NEW until the child runs. */
enum act_state {
    ACT_NEW = 0,
    ACT_RUNNING = 1,
    ACT_EXITED = 2,
    ACT_FAILED = 3,
    ACT_EXECING = 4,
    ACT_CANCELLED = 5,
};

/* One MAP_SHARED page per task: the child's inputs and its report. */
struct act_page {
    int tid;       /* CHILD_SETTID/CLEARTID futex word; -1 before the child */
    int state;     /* enum act_state */
    int step;      /* index of the failing op */
    int err;       /* its errno */
    int exit_code; /* the action's exit code (threads cannot be waited for) */
    int cancel;    /* futex word: a signal number asks the action to stop */
    int sighand;   /* CLONE_SIGHAND: dispositions are the caller's */
    int pad_;
    const struct act_op *ops;
    Py_ssize_t nops;
    char *const *environ;
    unsigned long caller_mask; /* kernel sigset to restore before exec */
};

#define ACT_PAGE 4096
#define ACT_GUARD 4096
#define ACT_DEFAULT_STACK (64 * 1024)
#define ACT_MIN_STACK (16 * 1024)
#define ACT_CACHE 32

struct ksigaction_ {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
    unsigned long spare[2];
};

/* ---- the child side: async-signal-safe, raw system calls only ---- */

/* Sleep until ts has passed or the parent sets page->cancel.  Returns 1
 * when cancelled, 0 otherwise. */
static int
act_sleep(struct act_page *pg, const struct timespec *ts)
{
    struct timespec end;
    act_sys(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&end, 0, 0, 0, 0);
    end.tv_sec += ts->tv_sec;
    end.tv_nsec += ts->tv_nsec;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    for (;;) {
        if (ACT_LOAD(pg->cancel) != 0) {
            return 1;
        }
        /* absolute CLOCK_MONOTONIC timeout */
        long r = act_sys(SYS_futex, (long)&pg->cancel, FUTEX_WAIT_BITSET, 0,
                         (long)&end, 0, (long)FUTEX_BITSET_MATCH_ANY);
        if (r == -ETIMEDOUT) {
            return ACT_LOAD(pg->cancel) != 0;
        }
    }
}

static long
act_exec(struct act_page *pg, const struct act_op *op)
{
    if (!pg->sighand) {
        /* No handler of the caller may run here once signals are
         * unblocked: set caught signals back to SIG_DFL (this child's
         * dispositions are a copy).  With CLONE_SIGHAND they are the
         * caller's and stay; execve resets them in the new image. */
        for (long sig = 1; sig <= 64; sig++) {
            struct ksigaction_ old = {0};
            if (sig == SIGKILL || sig == SIGSTOP ||
                act_sys(SYS_rt_sigaction, sig, 0, (long)&old, 8, 0, 0) < 0) {
                continue;
            }
            if (old.handler != (void *)SIG_DFL &&
                old.handler != (void *)SIG_IGN) {
                struct ksigaction_ dfl = {0};
                act_sys(SYS_rt_sigaction, sig, (long)&dfl, 0, 8, 0, 0);
            }
        }
    }
    ACT_STORE(pg->state, ACT_EXECING);
    act_sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&pg->caller_mask, 0, 8, 0,
            0);
    long r = act_sys(SYS_execve, (long)op->path, (long)op->argv,
                     (long)(op->envp ? op->envp : pg->environ), 0, 0, 0);
    unsigned long all = ~0UL;
    act_sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, 0, 8, 0, 0);
    return r;
}

static int __attribute__((noinline, used))
act_child(void *arg)
{
    struct act_page *pg = arg;
    ACT_STORE(pg->state, ACT_RUNNING);
    for (Py_ssize_t i = 0; i < pg->nops; i++) {
        const struct act_op *op = &pg->ops[i];
        long r = 0;
        int cancelled = ACT_LOAD(pg->cancel) != 0;
        if (!cancelled) {
            switch (op->code) {
            case OP_EXIT:
                ACT_STORE(pg->exit_code, (int)op->num);
                ACT_STORE(pg->state, ACT_EXITED);
                return (int)op->num;
            case OP_SLEEP:
                cancelled = act_sleep(pg, &op->ts);
                break;
            case OP_WRITE:
                act_copy(op->dst, op->src, op->len);
                break;
            case OP_CHDIR:
                r = act_sys(SYS_chdir, (long)op->path, 0, 0, 0, 0, 0);
                break;
            case OP_CLOSE:
                r = act_sys(SYS_close, op->num, 0, 0, 0, 0, 0);
                if (r == -EINTR) {
                    r = 0; /* Linux has released the descriptor */
                }
                break;
            case OP_IGNORE_SIGNAL: {
                struct ksigaction_ ign = {0};
                ign.handler = (void *)SIG_IGN;
                r = act_sys(SYS_rt_sigaction, op->num, (long)&ign, 0, 8, 0,
                            0);
                break;
            }
            case OP_EXEC:
                r = act_exec(pg, op);
                break;
            }
        }
        if (cancelled) {
            ACT_STORE(pg->exit_code, 128 + ACT_LOAD(pg->cancel));
            ACT_STORE(pg->state, ACT_CANCELLED);
            return 128 + pg->cancel;
        }
        if (r < 0) {
            ACT_STORE(pg->err, (int)-r);
            ACT_STORE(pg->step, (int)i);
            ACT_STORE(pg->exit_code, 127);
            ACT_STORE(pg->state, ACT_FAILED);
            return 127;
        }
    }
    ACT_STORE(pg->exit_code, 0);
    ACT_STORE(pg->state, ACT_EXITED);
    return 0;
}

/* ---- stacks and pages: mmap'd, cached, freed only when unused ---- */

static void *act_stack_cache[ACT_CACHE];
static int act_stack_cached;
static struct act_page *act_page_cache[ACT_CACHE];
static int act_page_cached;

/* A stack of `size` usable bytes above a PROT_NONE guard page; returns
 * the mapping's base (the guard page) or NULL with errno set. */
static char *
act_stack_get(size_t size)
{
    if (size == ACT_DEFAULT_STACK && act_stack_cached > 0) {
        return act_stack_cache[--act_stack_cached];
    }
    char *p = mmap(NULL, size + ACT_GUARD, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) {
        return NULL;
    }
    if (mprotect(p, ACT_GUARD, PROT_NONE) < 0) {
        int e = errno;
        munmap(p, size + ACT_GUARD);
        errno = e;
        return NULL;
    }
    return p;
}

static void
act_stack_put(char *base, size_t size)
{
    if (base == NULL) {
        return;
    }
    if (size == ACT_DEFAULT_STACK && act_stack_cached < ACT_CACHE) {
        act_stack_cache[act_stack_cached++] = base;
        return;
    }
    munmap(base, size + ACT_GUARD);
}

static struct act_page *
act_page_get(void)
{
    struct act_page *pg;
    if (act_page_cached > 0) {
        pg = act_page_cache[--act_page_cached];
    }
    else {
        pg = mmap(NULL, ACT_PAGE, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (pg == MAP_FAILED) {
            return NULL;
        }
    }
    memset(pg, 0, sizeof(*pg));
    return pg;
}

/* `reusable`: no task can still write to the page. */
static void
act_page_put(struct act_page *pg, int reusable)
{
    if (pg == NULL) {
        return;
    }
    if (reusable && act_page_cached < ACT_CACHE) {
        act_page_cache[act_page_cached++] = pg;
        return;
    }
    munmap(pg, ACT_PAGE);
}

/* Shared-VM children whose owner let go before they ended: their stack,
 * page and program stay until the kernel clears the tid word. */
struct act_pending {
    struct act_page *page;
    char *stack;
    size_t stack_size;
    PyObject *keep; /* the program (holds the buffers the child writes) */
};
static struct act_pending *act_pending;
static Py_ssize_t act_npending, act_pending_cap;

static void
act_reclaim(void)
{
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < act_npending; i++) {
        struct act_pending *p = &act_pending[i];
        if (ACT_LOAD(p->page->tid) == 0) {
            act_stack_put(p->stack, p->stack_size);
            act_page_put(p->page, 1);
            Py_XDECREF(p->keep);
        }
        else {
            act_pending[j++] = *p;
        }
    }
    act_npending = j;
}

/* Keep (page, stack, keep) until the child leaves; on allocation failure
 * leak them rather than free memory a task may still use. */
static void
act_defer(struct act_page *pg, char *stack, size_t size, PyObject *keep)
{
    if (act_npending == act_pending_cap) {
        Py_ssize_t cap = act_pending_cap ? act_pending_cap * 2 : 16;
        void *grown = PyMem_RawRealloc(act_pending, cap * sizeof(*act_pending));
        if (grown == NULL) {
            return;
        }
        act_pending = grown;
        act_pending_cap = cap;
    }
    act_pending[act_npending].page = pg;
    act_pending[act_npending].stack = stack;
    act_pending[act_npending].stack_size = size;
    act_pending[act_npending].keep = Py_XNewRef(keep);
    act_npending++;
}

/* Wait (without the GIL) for the kernel to clear the tid word.  Returns 1
 * when cleared, 0 on timeout (timeout_ns < 0: none), -1 with an exception
 * if a signal handler raised.  EINTR is retried. */
static int
act_join(struct act_page *pg, long long timeout_ns)
{
    struct timespec end, now;
    clock_gettime(CLOCK_MONOTONIC, &end);
    if (timeout_ns >= 0) {
        end.tv_sec += (time_t)(timeout_ns / 1000000000LL);
        end.tv_nsec += (long)(timeout_ns % 1000000000LL);
        if (end.tv_nsec >= 1000000000L) {
            end.tv_sec++;
            end.tv_nsec -= 1000000000L;
        }
    }
    for (;;) {
        int v = ACT_LOAD(pg->tid);
        if (v == 0) {
            return 1;
        }
        struct timespec rel, *tp = NULL;
        if (timeout_ns >= 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            rel.tv_sec = end.tv_sec - now.tv_sec;
            rel.tv_nsec = end.tv_nsec - now.tv_nsec;
            if (rel.tv_nsec < 0) {
                rel.tv_sec--;
                rel.tv_nsec += 1000000000L;
            }
            if (rel.tv_sec < 0) {
                return 0;
            }
            tp = &rel;
        }
        long r;
        Py_BEGIN_ALLOW_THREADS
        r = act_sys(SYS_futex, (long)&pg->tid, FUTEX_WAIT, v, (long)tp, 0, 0);
        Py_END_ALLOW_THREADS
        if (r == -EINTR && PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* Start act_child(pg) on the stack (base = guard page).  Returns the new
 * task's id or -errno. */
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
        ((void **)top)[0] = (void *)act_child;
        ((void **)top)[1] = pg;
        return act_clone_asm(SYS_clone,
                             (long)(flags | (unsigned)(exit_signal & 0xff)),
                             (long)top, (long)pt, (long)&pg->tid, 0);
#else
        int r = clone(act_child, top + 16,
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
    ((void **)top)[0] = (void *)act_child;
    ((void **)top)[1] = pg;
    return act_clone_asm(SYS_clone3, (long)&a, (long)sizeof(a), 0, 0, 0);
#else
    (void)set_tid;
    (void)set_tid_size;
    (void)cgroup_fd;
    return -ENOSYS; /* refused earlier for CLONE_VM; see action_check */
#endif
}

/* ---- _Program: an action compiled for the child ---- */

typedef struct {
    PyObject_HEAD
    struct act_op *ops;
    Py_ssize_t nops;
    Py_buffer *bufs;
    Py_ssize_t nbufs;
    char ***arrays; /* argv/envp arrays to free */
    Py_ssize_t narrays;
    PyObject *keep;       /* the op tuples: own the bytes the ops point to */
    PyObject *labels;     /* tuple of str, one per op */
    PyObject *make_error; /* callable(errno, label, index) -> exception */
    int has_exec;
    int has_ignore;
} ProgramObject;

static PyTypeObject Program_Type;

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
    if ((strcmp(s, "close") == 0 || strcmp(s, "ignore_signal") == 0) &&
        n == 3) {
        out->code = s[0] == 'c' ? OP_CLOSE : OP_IGNORE_SIGNAL;
        out->num = PyLong_AsLong(ARG(2));
        if (out->code == OP_IGNORE_SIGNAL) {
            self->has_ignore = 1;
        }
        return (out->num == -1 && PyErr_Occurred()) ? -1 : 0;
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
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
program_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ops", "make_error", NULL};
    PyObject *ops_arg, *make_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:_action_program", kwlist,
                                     &ops_arg, &make_error)) {
        return NULL;
    }
    if (!PyCallable_Check(make_error)) {
        PyErr_SetString(PyExc_TypeError, "make_error must be callable");
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
             "_action_program(ops, make_error)\n--\n\n"
             "An action compiled into raw system calls for a child (private;\n"
             "build it with pyclone.actions).  ops: tuples (name, label, "
             "*args).\nThe writable buffers it names are held (locked against "
             "resizing)\nuntil the program and every task running it are "
             "gone.");

static PyTypeObject Program_Type = {
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
static ProgramObject *
action_program(PyObject *fn)
{
    if (PyObject_TypeCheck(fn, &Program_Type)) {
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
    if (!PyObject_TypeCheck(p, &Program_Type)) {
        Py_DECREF(p);
        return NULL;
    }
    return (ProgramObject *)p;
}

/* ---- _Run: one task running a program ---- */

typedef struct {
    PyObject_HEAD
    struct act_page *page;
    char *stack; /* NULL once given back */
    size_t stack_size;
    ProgramObject *prog;
    unsigned long long flags;
} RunObject;

static PyTypeObject Run_Type;

static void
run_release_impl(RunObject *self)
{
    if (self->page == NULL) {
        act_stack_put(self->stack, self->stack_size); /* no task was started */
        self->stack = NULL;
        return;
    }
    if ((self->flags & F_VM) && ACT_LOAD(self->page->tid) != 0) {
        /* still on its stack, maybe writing into the program's buffers */
        act_defer(self->page, self->stack, self->stack_size,
                  (PyObject *)self->prog);
    }
    else {
        act_stack_put(self->stack, self->stack_size);
        act_page_put(self->page, (self->flags & F_VM) != 0);
    }
    self->page = NULL;
    self->stack = NULL;
}

static void
run_dealloc(RunObject *self)
{
    run_release_impl(self);
    Py_XDECREF(self->prog);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The kernel clears the tid word early in a thread's exit; wait (briefly,
 * without the GIL) until the thread is released too, so that a joined thread
 * is gone from /proc/self/task, as a reaped process is gone from /proc. */
static void
wait_thread_released(pid_t tid)
{
    pid_t tgid = getpid();
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        if (syscall(SYS_tgkill, tgid, tid, 0) < 0 && errno == ESRCH) {
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000000000L +
                (now.tv_nsec - start.tv_nsec) > 100000000L) {
            break; /* 100 ms: never hang a join on this */
        }
        sched_yield();
    }
    Py_END_ALLOW_THREADS
}

static PyObject *
run_join(RunObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "join(timeout=None)");
        return NULL;
    }
    if (self->page == NULL || !(self->flags & F_VM)) {
        PyErr_SetString(PyExc_ValueError,
                        "join() needs a CLONE_VM task that was not released");
        return NULL;
    }
    long long ns = -1;
    if (nargs == 1 && args[0] != Py_None) {
        double t = PyFloat_AsDouble(args[0]);
        if (t == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        ns = t <= 0 ? 0 : (t > 9e9 ? 9000000000000000000LL : (long long)(t * 1e9));
    }
    int tid = ACT_LOAD(self->page->tid);
    int r = act_join(self->page, ns);
    if (r < 0) {
        return NULL;
    }
    if (r == 1) {
        if ((self->flags & F_THREAD) && tid > 0) {
            wait_thread_released(tid);
        }
        act_reclaim();
    }
    return PyBool_FromLong(r);
}

static PyObject *
run_outcome(RunObject *self, PyObject *Py_UNUSED(arg))
{
    if (self->page == NULL) {
        PyErr_SetString(PyExc_ValueError, "the task's report was released");
        return NULL;
    }
    struct act_page *pg = self->page;
    int state = ACT_LOAD(pg->state);
    return Py_BuildValue("(iiii)", state, ACT_LOAD(pg->exit_code),
                         ACT_LOAD(pg->step), ACT_LOAD(pg->err));
}

static PyObject *
run_error(RunObject *self, PyObject *Py_UNUSED(arg))
{
    if (self->page == NULL || ACT_LOAD(self->page->state) != ACT_FAILED) {
        Py_RETURN_NONE;
    }
    int step = ACT_LOAD(self->page->step);
    if (step < 0 || step >= self->prog->nops) {
        PyErr_SetString(PyExc_SystemError, "action report names no step");
        return NULL;
    }
    return PyObject_CallFunction(self->prog->make_error, "iOi",
                                 ACT_LOAD(self->page->err),
                                 PyTuple_GET_ITEM(self->prog->labels, step),
                                 step);
}

static PyObject *
run_cancel(RunObject *self, PyObject *arg)
{
    int sig = act_as_int(arg);
    if (sig == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (sig <= 0 || sig > 64) {
        PyErr_SetString(PyExc_ValueError, "cancel(signum) needs a signal number");
        return NULL;
    }
    if (self->page != NULL) {
        int expected = 0;
        __atomic_compare_exchange_n(&self->page->cancel, &expected, sig, 0,
                                    __ATOMIC_RELEASE, __ATOMIC_RELAXED);
        act_sys(SYS_futex, (long)&self->page->cancel, FUTEX_WAKE, 1, 0, 0, 0);
    }
    Py_RETURN_NONE;
}

static PyObject *
run_release(RunObject *self, PyObject *Py_UNUSED(arg))
{
    run_release_impl(self);
    Py_RETURN_NONE;
}

static PyObject *
run_get_finished(RunObject *self, void *Py_UNUSED(closure))
{
    /* For CLONE_VM tasks: the kernel cleared the tid word (exit or exec). */
    return PyBool_FromLong(self->page == NULL ||
                           ACT_LOAD(self->page->tid) == 0);
}

static PyMethodDef run_methods[] = {
    {"join", (PyCFunction)(void (*)(void))run_join, METH_FASTCALL,
     "join(timeout=None) -> bool: wait (GIL released) until the kernel "
     "cleared\nthe task's tid word (CLONE_VM tasks: exit or exec)."},
    {"outcome", (PyCFunction)run_outcome, METH_NOARGS,
     "outcome() -> (state, exit_code, step, errno) as the child reported."},
    {"error", (PyCFunction)run_error, METH_NOARGS,
     "error() -> the exception for a failed step, or None."},
    {"cancel", (PyCFunction)run_cancel, METH_O,
     "cancel(signum): ask the action to stop at its next step or sleep."},
    {"release", (PyCFunction)run_release, METH_NOARGS,
     "release(): give back the stack and report page (deferred while a "
     "CLONE_VM\ntask may still use them)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef run_getset[] = {
    {"finished", (getter)run_get_finished, NULL,
     "True once a CLONE_VM task left its stack", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Run_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyclone._pyclone._action_run",
    .tp_basicsize = sizeof(RunObject),
    .tp_dealloc = (destructor)run_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The stack and report page of one task running an action.",
    .tp_methods = run_methods,
    .tp_getset = run_getset,
};

/* ---- spawning ---- */

static int convert_flags(PyObject *obj, unsigned long long *out);

static int
action_check(PyObject *module, const clone_request *req,
             const ProgramObject *prog)
{
    unsigned long long f = req->flags;
    if (f & F_SETTLS) {
        raise_unsupported(
            module,
            "CLONE_SETTLS is refused: the child would need a thread control "
            "block that only the C library can build; drop CLONE_SETTLS "
            "(an action needs no TLS)");
        return -1;
    }
    if ((f & F_THREAD) && prog->has_exec) {
        raise_unsupported(
            module,
            "an exec action with CLONE_THREAD is refused: execve in a thread "
            "replaces the whole process, the caller included; drop "
            "CLONE_THREAD (e.g. share='vfork')");
        return -1;
    }
    if ((f & F_SIGHAND) && prog->has_ignore) {
        raise_unsupported(
            module,
            "ignore_signal with CLONE_SIGHAND is refused: it would change "
            "the caller's disposition behind the signal module's back; "
            "call signal.signal() in the caller, or drop CLONE_SIGHAND");
        return -1;
    }
    if ((f & F_SIGHAND) && (f & F_NEWPID)) {
        raise_unsupported(
            module,
            "CLONE_SIGHAND|CLONE_NEWPID is refused: when the new pid "
            "namespace's init exits, the kernel sets SIGCHLD to SIG_IGN in "
            "the shared handler table, and the caller's children are then "
            "reaped behind its back; drop one of the two");
        return -1;
    }
    if (!ACT_ASM_CLONE && req->api == API_CLONE3) {
        raise_unsupported(
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
          pid_t *pid_out, int *pidfd_out)
{
    if (action_check(module, req, prog) < 0 ||
        PySys_Audit("pyclone.clone", "sKi", api_name(req->api), req->flags,
                    req->exit_signal) < 0) {
        return NULL;
    }
    act_reclaim();
    size_t size = req->stack_size == 0
                      ? ACT_DEFAULT_STACK
                      : ((size_t)req->stack_size + 4095) & ~(size_t)4095;
    RunObject *run = PyObject_New(RunObject, &Run_Type);
    if (run == NULL) {
        return NULL;
    }
    run->prog = (ProgramObject *)Py_NewRef(prog);
    run->flags = req->flags;
    run->stack_size = size;
    run->stack = act_stack_get(size);
    run->page = run->stack ? act_page_get() : NULL;
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
    memcpy(&pg->caller_mask, &old, sizeof(pg->caller_mask));
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
        raise_clone_error(module, (int)-pid, req);
        return NULL;
    }
    if (!(req->flags & F_VM) || (req->flags & F_VFORK)) {
        /* a copy child has its own stack; a vfork child has left ours */
        act_stack_put(run->stack, size);
        run->stack = NULL;
    }
    if ((req->flags & F_VFORK) && ACT_LOAD(pg->state) == ACT_FAILED) {
        PyObject *exc = run_error(run, NULL);
        if (pidfd >= 0) {
            close(pidfd);
        }
        if (!(req->flags & (F_THREAD | F_PARENT))) {
            act_reap((pid_t)pid);
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
static PyObject *
spawn_action(PyObject *module, clone_request *req, ProgramObject *prog)
{
    pid_t pid;
    int pidfd;
    RunObject *run = act_spawn(module, req, prog, &pid, &pidfd);
    if (run == NULL) {
        return NULL;
    }
    Py_DECREF(run); /* deferred while a CLONE_VM task still runs */
    if (req->api == API_CLONE) {
        close_quietly(pidfd);
        return PyLong_FromLong(pid);
    }
    if (!req->want_pidfd || pidfd < 0) {
        close_quietly(pidfd);
        return Py_BuildValue("(iO)", pid, Py_None);
    }
    return Py_BuildValue("(ii)", pid, pidfd);
}

PyDoc_STRVAR(spawn_action_doc,
             "_spawn_action($module, action, flags, exit_signal, pidfd, "
             "clone3, stack_size, /)\n--\n\n"
             "Start an action (or _Program) for the Task layer; return "
             "(pid, pidfd or None, _Run).");

static PyObject *
pyclone_spawn_action(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "_spawn_action takes 6 arguments");
        return NULL;
    }
    ProgramObject *prog = action_program(args[0]);
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
    req.exit_signal = act_as_int(args[2]);
    req.stack_size = PyLong_AsSsize_t(args[5]);
    if (want_pidfd < 0 || use3 < 0 || PyErr_Occurred() ||
        convert_flags(args[1], &req.flags) < 0) {
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
    RunObject *run = act_spawn(module, &req, prog, &pid, &pidfd);
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

/* ---- _floor: launch+wait round trips from C, for the benchmarks ---- */

static int
floor_noop(void *Py_UNUSED(arg))
{
    return 0;
}

static void *
floor_pthread_fn(void *arg)
{
    return arg;
}

static int
floor_exec_true(void *Py_UNUSED(arg))
{
    static char *const argv[] = {"/bin/true", NULL};
    static char *const envp[] = {NULL};
    act_sys(SYS_execve, (long)"/bin/true", (long)argv, (long)envp, 0, 0, 0);
    return 127;
}

/* Start fn on an action stack with the legacy clone; -errno on failure. */
static long
floor_start(unsigned long flags, char *base, int *ctid, int (*fn)(void *))
{
    char *top = base + ACT_GUARD + ACT_DEFAULT_STACK - 16;
    __atomic_store_n(ctid, -1, __ATOMIC_RELAXED);
#if ACT_ASM_CLONE
    ((void **)top)[0] = (void *)fn;
    ((void **)top)[1] = NULL;
    return act_clone_asm(SYS_clone, (long)flags, (long)top, 0, (long)ctid, 0);
#else
    int r = clone(fn, top + 16, (int)flags, NULL, NULL, NULL, ctid);
    return r < 0 ? -errno : r;
#endif
}

/* One round trip of `kind`; 0 or an errno. */
static int
floor_once(int kind, char *stack, struct act_page *pg)
{
    pid_t pid;
    int st;
    switch (kind) {
    case 0: /* fork */
        pid = fork();
        if (pid == 0) {
            _exit(0);
        }
        if (pid < 0) {
            return errno;
        }
        return waitpid(pid, &st, 0) == pid ? 0 : errno;
    case 1: { /* vfork_exec */
        long r = floor_start(F_VM | F_VFORK | SIGCHLD, stack, &pg->tid,
                             floor_exec_true);
        if (r < 0) {
            return (int)-r;
        }
        return waitpid((pid_t)r, &st, 0) == r ? 0 : errno;
    }
    case 2: { /* thread */
        long r = floor_start(F_VM | F_FS | F_FILES | F_SIGHAND | F_THREAD |
                                 F_SYSVSEM | F_CHILD_SETTID | F_CHILD_CLEARTID,
                             stack, &pg->tid, floor_noop);
        if (r < 0) {
            return (int)-r;
        }
        int v;
        while ((v = ACT_LOAD(pg->tid)) != 0) {
            act_sys(SYS_futex, (long)&pg->tid, FUTEX_WAIT, v, 0, 0, 0);
        }
        return 0;
    }
    case 3: { /* pthread */
        pthread_t t;
        int e = pthread_create(&t, NULL, floor_pthread_fn, NULL);
        return e ? e : pthread_join(t, NULL);
    }
    default: { /* posix_spawn */
        static char *const argv[] = {"/bin/true", NULL};
        int e = posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ);
        if (e) {
            return e;
        }
        return waitpid(pid, &st, 0) == pid ? 0 : errno;
    }
    }
}

PyDoc_STRVAR(floor_doc,
             "_floor($module, kind, n, heap_bytes=0, /)\n--\n\n"
             "Time n launch+wait round trips from C (no Python in the loop) "
             "and\nreturn the seconds of each.  kind: 'fork', 'vfork_exec', "
             "'thread'\n(pyclone's thread-action flags, stack and futex "
             "join), 'pthread',\n'posix_spawn'.  heap_bytes: touch that much "
             "extra heap first.");

static PyObject *
pyclone_floor(PyObject *Py_UNUSED(module), PyObject *args)
{
    static const char *kinds[] = {"fork", "vfork_exec", "thread", "pthread",
                                  "posix_spawn"};
    const char *name;
    Py_ssize_t n, heap = 0;
    if (!PyArg_ParseTuple(args, "sn|n:_floor", &name, &n, &heap)) {
        return NULL;
    }
    int kind = -1;
    for (int i = 0; i < 5; i++) {
        if (strcmp(name, kinds[i]) == 0) {
            kind = i;
        }
    }
    if (kind < 0 || n < 0 || heap < 0) {
        PyErr_Format(PyExc_ValueError,
                     "_floor(kind, n, heap_bytes): kind is one of fork, "
                     "vfork_exec, thread, pthread, posix_spawn; n and "
                     "heap_bytes are >= 0");
        return NULL;
    }
    double *times = PyMem_Calloc((size_t)n + 1, sizeof(double));
    char *heapmem = heap ? PyMem_RawMalloc((size_t)heap) : NULL;
    char *stack = act_stack_get(ACT_DEFAULT_STACK);
    struct act_page *pg = stack ? act_page_get() : NULL;
    if (times == NULL || (heap && heapmem == NULL) || pg == NULL) {
        PyMem_Free(times);
        PyMem_RawFree(heapmem);
        act_stack_put(stack, ACT_DEFAULT_STACK);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < heap; i += 4096) {
        heapmem[i] = 1;
    }
    int err = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n && err == 0; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        err = floor_once(kind, stack, pg);
        clock_gettime(CLOCK_MONOTONIC, &b);
        times[i] = (double)(b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(heapmem);
    act_stack_put(stack, ACT_DEFAULT_STACK);
    act_page_put(pg, 1);
    PyObject *res = NULL;
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    else if ((res = PyList_New(n)) != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *f = PyFloat_FromDouble(times[i]);
            if (f == NULL) {
                Py_CLEAR(res);
                break;
            }
            PyList_SET_ITEM(res, i, f);
        }
    }
    PyMem_Free(times);
    return res;
}

#define ACTION_METHODS                                                      \
    {"_spawn_action", (PyCFunction)(void (*)(void))pyclone_spawn_action,    \
     METH_FASTCALL, spawn_action_doc},                                      \
    {"_floor", pyclone_floor, METH_VARARGS, floor_doc},

static int
actions_init(PyObject *module)
{
    if (PyType_Ready(&Program_Type) < 0 || PyType_Ready(&Run_Type) < 0) {
        return -1;
    }
    if (PyModule_AddObject(module, "_action_program",
                           Py_NewRef((PyObject *)&Program_Type)) < 0) {
        Py_DECREF(&Program_Type);
        return -1;
    }
    if (PyModule_AddObject(module, "_action_run", Py_NewRef((PyObject *)&Run_Type)) <
        0) {
        Py_DECREF(&Run_Type);
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

/* ================================================================== */
/* End of the actions section                                          */
/* ================================================================== */

static PyObject *
do_spawn(PyObject *module, clone_request *req)
{
    ProgramObject *prog = action_program(req->fn); /* see "Actions" */
    if (prog != NULL) {
        PyObject *r = spawn_action(module, req, prog);
        Py_DECREF(prog);
        return r;
    }
    if (check_request(module, req) < 0) {
        return NULL;
    }
    if (PySys_Audit("pyclone.clone", "sKi", api_name(req->api), req->flags,
                    req->exit_signal) < 0) {
        return NULL;
    }
    if (req->flags & F_VM) {
        return spawn_borrowed(module, req);
    }
    return spawn_forklike(module, req);
}

/* ------------------------------------------------------------------ */
/* Argument conversion */

static int
convert_flags(PyObject *obj, unsigned long long *out)
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

PyDoc_STRVAR(
    clone_doc,
    "clone($module, fn, flags, stack_size=0, /, *, allow_threads=False)\n"
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
    "writes to Python objects are the caller's.  stack_size=0 runs it on\n"
    "the caller's stack, a size of at least 8 MiB on a stack of its own.\n"
    "See pyclone.child_exit() and pyclone.child_exec().\n\n"
    "Raises OSError with the kernel's errno when the kernel rejects the\n"
    "flags, and UnsupportedFlags for flag sets pyclone refuses.");

static PyObject *
pyclone_clone(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    static const char *const kwlist[] = {"allow_threads", NULL};
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
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, i);
        if (!PyUnicode_Check(key) ||
            PyUnicode_CompareWithASCIIString(key, kwlist[0]) != 0) {
            PyErr_Format(PyExc_TypeError,
                         "clone() got an unexpected keyword argument '%S'",
                         key);
            return NULL;
        }
        req.allow_threads = PyObject_IsTrue(args[nargs + i]);
        if (req.allow_threads < 0) {
            return NULL;
        }
    }
    req.fn = args[0];
    unsigned long long word;
    if (convert_flags(args[1], &word) < 0) {
        return NULL;
    }
    Py_ssize_t stack_size = 0;
    if (nargs == 3 && convert_stack_size(args[2], &stack_size) < 0) {
        return NULL;
    }
    req.stack_size = stack_size;
    if (word >> 32) {
        return raise_unsupported(
            module,
            "clone(): flags 0x%llx have bits above the low 32, which "
            "clone(2) silently drops (CLONE_CLEAR_SIGHAND, "
            "CLONE_INTO_CGROUP are clone3-only); use clone3()",
            word >> 32 << 32);
    }
    req.exit_signal = (int)(word & F_CSIGNAL);
    req.flags = word & ~F_CSIGNAL;
    return do_spawn(module, &req);
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
    "       set_tid=(), cgroup=None, stack_size=0, allow_threads=False)\n"
    "--\n\n"
    "Create a task with clone3(2) running fn(); return (pid, pidfd or None).\n\n"
    "flags is the 64-bit clone_args.flags (no exit signal in it);\n"
    "exit_signal is separate.  pidfd=True sets CLONE_PIDFD and returns the\n"
    "descriptor (close-on-exec), which the caller then owns.  set_tid lists\n"
    "the pids to use, innermost pid namespace first.  cgroup is an open\n"
    "descriptor of a cgroup v2 directory (sets CLONE_INTO_CGROUP).\n"
    "Child semantics are those of clone(), actions included.");

static PyObject *
pyclone_clone3(PyObject *module, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fn", "flags", "exit_signal", "pidfd",
                             "set_tid", "cgroup", "stack_size",
                             "allow_threads", NULL};
    PyObject *fn, *flags_obj = NULL, *set_tid = NULL, *cgroup = Py_None;
    PyObject *stack_obj = NULL;
    int exit_signal = SIGCHLD, want_pidfd = 0, allow_threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O$ipOOOp:clone3", kwlist,
                                     &fn, &flags_obj, &exit_signal,
                                     &want_pidfd, &set_tid, &cgroup,
                                     &stack_obj, &allow_threads)) {
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
    if (flags_obj != NULL && convert_flags(flags_obj, &req.flags) < 0) {
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
    return do_spawn(module, &req);
}

/* ------------------------------------------------------------------ */
/* clone3 issue: pidfd_send_signal with a value, unshare, setns.
 * Thin entry points, one per system call; the policy is in pyclone.pidfd
 * and pyclone.task. */

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

PyDoc_STRVAR(unshare_doc,
             "unshare($module, flags, /)\n"
             "--\n\n"
             "unshare(2) for the calling process (os.unshare exists only "
             "from\nPython 3.12).  Raises OSError with the kernel's errno.");

static PyObject *
pyclone_unshare(PyObject *Py_UNUSED(module), PyObject *arg)
{
    unsigned long long flags;
    if (convert_flags(arg, &flags) < 0) {
        return NULL;
    }
    if (flags >> 32) {
        PyErr_SetString(PyExc_ValueError,
                        "unshare(2) takes 32-bit CLONE_NEW* flags");
        return NULL;
    }
    if (syscall(SYS_unshare, (unsigned long)flags) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(setns_doc,
             "setns($module, fd, nstype=0, /)\n"
             "--\n\n"
             "setns(2): move the calling process into the namespace (or "
             "pidfd)\nfd refers to (os.setns exists only from Python 3.12).");

static PyObject *
pyclone_setns(PyObject *Py_UNUSED(module), PyObject *args)
{
    int fd, nstype = 0;
    if (!PyArg_ParseTuple(args, "i|i:setns", &fd, &nstype)) {
        return NULL;
    }
    if (syscall(SYS_setns, fd, nstype) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ */

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

PyDoc_STRVAR(set_error_hook_doc,
             "_set_error_hook($module, hook, /)\n"
             "--\n\n"
             "Install hook(errno, flags, api, exit_signal) -> OSError, used "
             "to build\nthe exception for a rejected clone; None removes it.");

static PyObject *
pyclone_set_error_hook(PyObject *module, PyObject *hook)
{
    module_state *st = get_state(module);
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

PyDoc_STRVAR(tstate_id_doc,
             "_tstate_id($module, /)\n"
             "--\n\n"
             "Address of the current thread state (a test hook).");

static PyObject *
pyclone_tstate_id(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(arg))
{
    return PyLong_FromVoidPtr(PyThreadState_Get());
}

PyDoc_STRVAR(thread_count_doc,
             "_thread_count($module, /)\n"
             "--\n\n"
             "Number of threads in this process, from /proc/self/stat.");

static PyObject *
pyclone_thread_count(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(arg))
{
    long n = count_threads();
    if (n < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(n);
}

/* ------------------------------------------------------------------ */
/* Sandbox syscalls (issue 6): mount(2), umount2(2), pivot_root(2),
 * setdomainname(2), prctl(2), capget(2)/capset(2).
 *
 * One thin entry point per system call: argument conversion, the call
 * (GIL released where it may block on a filesystem), OSError with the
 * kernel's errno and the path as filename.  The order of setup steps and
 * every decision about them lives in pyclone/sandbox.py. */

#include <sys/mount.h>
#include <linux/capability.h>

#ifndef SYS_pivot_root
#define SYS_pivot_root 155
#endif
#ifndef MS_PRIVATE
#define MS_PRIVATE (1 << 18)
#endif
#ifndef MS_SLAVE
#define MS_SLAVE (1 << 19)
#endif
#ifndef MS_REC
#define MS_REC 16384
#endif
#ifndef MS_SILENT
#define MS_SILENT 32768
#endif
#ifndef MS_RELATIME
#define MS_RELATIME (1 << 21)
#endif
#ifndef MS_STRICTATIME
#define MS_STRICTATIME (1 << 24)
#endif
#ifndef MNT_DETACH
#define MNT_DETACH 2
#endif
#ifndef MNT_EXPIRE
#define MNT_EXPIRE 4
#endif
#ifndef UMOUNT_NOFOLLOW
#define UMOUNT_NOFOLLOW 8
#endif
#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_IS_SET 1
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_LOWER 3
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif
#ifndef PR_SET_NO_NEW_PRIVS
#define PR_SET_NO_NEW_PRIVS 38
#define PR_GET_NO_NEW_PRIVS 39
#endif

/* Optional str/bytes path argument: None gives NULL. */
static int
optional_fs_path(PyObject *obj, void *addr)
{
    PyObject **out = (PyObject **)addr;
    if (obj == NULL) { /* cleanup call */
        Py_CLEAR(*out);
        return 1;
    }
    if (obj == Py_None) {
        *out = NULL;
        return 1;
    }
    return PyUnicode_FSConverter(obj, out) ? Py_CLEANUP_SUPPORTED : 0;
}

#define BYTES_OR_NULL(o) ((o) == NULL ? NULL : PyBytes_AS_STRING(o))

/* Raise OSError from errno with the paths (bytes from FSConverter, or
 * NULL) decoded back to str as filename and filename2. */
static void
raise_with_paths(PyObject *path1, PyObject *path2)
{
    int saved = errno;
    PyObject *f1 = NULL, *f2 = NULL;
    if (path1 != NULL) {
        f1 = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(path1),
                                              PyBytes_GET_SIZE(path1));
    }
    if (path2 != NULL) {
        f2 = PyUnicode_DecodeFSDefaultAndSize(PyBytes_AS_STRING(path2),
                                              PyBytes_GET_SIZE(path2));
    }
    if ((path1 != NULL && f1 == NULL) || (path2 != NULL && f2 == NULL)) {
        Py_XDECREF(f1);
        Py_XDECREF(f2);
        return;
    }
    errno = saved;
    PyErr_SetFromErrnoWithFilenameObjects(PyExc_OSError, f1, f2);
    Py_XDECREF(f1);
    Py_XDECREF(f2);
}

PyDoc_STRVAR(mount_doc,
             "mount($module, source, target, fstype=None, flags=0, data=None, /)\n"
             "--\n\n"
             "mount(2).  source, fstype and data may be None (NULL).  Raises\n"
             "OSError with the kernel's errno, target as filename and source as\n"
             "filename2.");

static PyObject *
pyclone_mount(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *source = NULL, *target = NULL, *fstype = NULL, *data = NULL;
    unsigned long flags = 0;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "O&O&|O&kO&:mount", optional_fs_path, &source,
                          PyUnicode_FSConverter, &target, optional_fs_path,
                          &fstype, &flags, optional_fs_path, &data)) {
        goto done;
    }
    int r, saved;
    Py_BEGIN_ALLOW_THREADS
    r = mount(BYTES_OR_NULL(source), PyBytes_AS_STRING(target),
              BYTES_OR_NULL(fstype), flags, BYTES_OR_NULL(data));
    saved = errno;
    Py_END_ALLOW_THREADS
    if (r < 0) {
        errno = saved;
        raise_with_paths(target, source);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(source);
    Py_XDECREF(target);
    Py_XDECREF(fstype);
    Py_XDECREF(data);
    return result;
}

PyDoc_STRVAR(umount2_doc,
             "umount2($module, target, flags=0, /)\n"
             "--\n\n"
             "umount2(2), e.g. with MNT_DETACH.  Raises OSError with target as "
             "filename.");

static PyObject *
pyclone_umount2(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *target = NULL;
    int flags = 0;
    if (!PyArg_ParseTuple(args, "O&|i:umount2", PyUnicode_FSConverter, &target,
                          &flags)) {
        return NULL;
    }
    int r, saved;
    Py_BEGIN_ALLOW_THREADS
    r = umount2(PyBytes_AS_STRING(target), flags);
    saved = errno;
    Py_END_ALLOW_THREADS
    if (r < 0) {
        errno = saved;
        raise_with_paths(target, NULL);
        Py_DECREF(target);
        return NULL;
    }
    Py_DECREF(target);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(pivot_root_doc,
             "pivot_root($module, new_root, put_old, /)\n"
             "--\n\n"
             "pivot_root(2): make new_root the root mount of this mount\n"
             "namespace and move the old root to put_old.  Raises OSError with\n"
             "new_root as filename and put_old as filename2.");

static PyObject *
pyclone_pivot_root(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *new_root = NULL, *put_old = NULL;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "O&O&:pivot_root", PyUnicode_FSConverter,
                          &new_root, PyUnicode_FSConverter, &put_old)) {
        goto done;
    }
    long r;
    int saved;
    Py_BEGIN_ALLOW_THREADS
    r = syscall(SYS_pivot_root, PyBytes_AS_STRING(new_root),
                PyBytes_AS_STRING(put_old));
    saved = errno;
    Py_END_ALLOW_THREADS
    if (r < 0) {
        errno = saved;
        raise_with_paths(new_root, put_old);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(new_root);
    Py_XDECREF(put_old);
    return result;
}

PyDoc_STRVAR(setdomainname_doc,
             "setdomainname($module, name, /)\n"
             "--\n\n"
             "setdomainname(2): set the NIS domain name of this UTS namespace.");

static PyObject *
pyclone_setdomainname(PyObject *Py_UNUSED(module), PyObject *arg)
{
    PyObject *name = NULL;
    if (!PyUnicode_FSConverter(arg, &name)) {
        return NULL;
    }
    if (setdomainname(PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name)) <
        0) {
        Py_DECREF(name);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_DECREF(name);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(prctl_doc,
             "prctl($module, option, arg2=0, arg3=0, arg4=0, arg5=0, /)\n"
             "--\n\n"
             "prctl(2) with integer arguments; returns the call's result.\n"
             "Raises OSError with the kernel's errno.");

static PyObject *
pyclone_prctl(PyObject *Py_UNUSED(module), PyObject *args)
{
    int option;
    unsigned long a2 = 0, a3 = 0, a4 = 0, a5 = 0;
    if (!PyArg_ParseTuple(args, "i|kkkk:prctl", &option, &a2, &a3, &a4, &a5)) {
        return NULL;
    }
    int r = prctl(option, a2, a3, a4, a5);
    if (r < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(r);
}

PyDoc_STRVAR(capget_doc,
             "capget($module, pid=0, /)\n"
             "--\n\n"
             "capget(2) (version 3): (effective, permitted, inheritable) of the\n"
             "task pid (0: the caller), each a 64-bit mask of CAP_* bits.");

static PyObject *
pyclone_capget(PyObject *Py_UNUSED(module), PyObject *args)
{
    int pid = 0;
    if (!PyArg_ParseTuple(args, "|i:capget", &pid)) {
        return NULL;
    }
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, pid};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &hdr, data) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    unsigned long long eff = data[0].effective |
                             ((unsigned long long)data[1].effective << 32);
    unsigned long long perm = data[0].permitted |
                              ((unsigned long long)data[1].permitted << 32);
    unsigned long long inh = data[0].inheritable |
                             ((unsigned long long)data[1].inheritable << 32);
    return Py_BuildValue("(KKK)", eff, perm, inh);
}

PyDoc_STRVAR(capset_doc,
             "capset($module, effective, permitted, inheritable, /)\n"
             "--\n\n"
             "capset(2) (version 3) for the calling thread: set its effective,\n"
             "permitted and inheritable sets, each a 64-bit mask of CAP_* bits.");

static PyObject *
pyclone_capset(PyObject *Py_UNUSED(module), PyObject *args)
{
    unsigned long long eff, perm, inh;
    if (!PyArg_ParseTuple(args, "KKK:capset", &eff, &perm, &inh)) {
        return NULL;
    }
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    data[0].effective = (uint32_t)eff;
    data[1].effective = (uint32_t)(eff >> 32);
    data[0].permitted = (uint32_t)perm;
    data[1].permitted = (uint32_t)(perm >> 32);
    data[0].inheritable = (uint32_t)inh;
    data[1].inheritable = (uint32_t)(inh >> 32);
    if (syscall(SYS_capset, &hdr, data) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

#define SANDBOX_METHODS                                                      \
    {"mount", pyclone_mount, METH_VARARGS, mount_doc},                       \
        {"umount2", pyclone_umount2, METH_VARARGS, umount2_doc},             \
        {"pivot_root", pyclone_pivot_root, METH_VARARGS, pivot_root_doc},    \
        {"setdomainname", pyclone_setdomainname, METH_O, setdomainname_doc}, \
        {"prctl", pyclone_prctl, METH_VARARGS, prctl_doc},                   \
        {"capget", pyclone_capget, METH_VARARGS, capget_doc},                \
        {"capset", pyclone_capset, METH_VARARGS, capset_doc},

static const flag_def sandbox_constants[] = {
    {"MS_RDONLY", MS_RDONLY},
    {"MS_NOSUID", MS_NOSUID},
    {"MS_NODEV", MS_NODEV},
    {"MS_NOEXEC", MS_NOEXEC},
    {"MS_REMOUNT", MS_REMOUNT},
    {"MS_NOATIME", MS_NOATIME},
    {"MS_NODIRATIME", MS_NODIRATIME},
    {"MS_BIND", MS_BIND},
    {"MS_REC", MS_REC},
    {"MS_SILENT", MS_SILENT},
    {"MS_PRIVATE", MS_PRIVATE},
    {"MS_SLAVE", MS_SLAVE},
    {"MS_RELATIME", MS_RELATIME},
    {"MS_STRICTATIME", MS_STRICTATIME},
    {"MNT_FORCE", MNT_FORCE},
    {"MNT_DETACH", MNT_DETACH},
    {"MNT_EXPIRE", MNT_EXPIRE},
    {"UMOUNT_NOFOLLOW", UMOUNT_NOFOLLOW},
    {"PR_SET_PDEATHSIG", PR_SET_PDEATHSIG},
    {"PR_GET_PDEATHSIG", PR_GET_PDEATHSIG},
    {"PR_SET_KEEPCAPS", PR_SET_KEEPCAPS},
    {"PR_CAPBSET_READ", PR_CAPBSET_READ},
    {"PR_CAPBSET_DROP", PR_CAPBSET_DROP},
    {"PR_SET_NO_NEW_PRIVS", PR_SET_NO_NEW_PRIVS},
    {"PR_GET_NO_NEW_PRIVS", PR_GET_NO_NEW_PRIVS},
    {"PR_CAP_AMBIENT", PR_CAP_AMBIENT},
    {"PR_CAP_AMBIENT_IS_SET", PR_CAP_AMBIENT_IS_SET},
    {"PR_CAP_AMBIENT_CLEAR_ALL", PR_CAP_AMBIENT_CLEAR_ALL},
};

static int
sandbox_add_constants(PyObject *module)
{
    size_t n = sizeof(sandbox_constants) / sizeof(sandbox_constants[0]);
    for (size_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromUnsignedLongLong(sandbox_constants[i].value);
        if (v == NULL ||
            PyModule_AddObject(module, sandbox_constants[i].name, v) < 0) {
            Py_XDECREF(v);
            return -1;
        }
    }
    return 0;
}

/* End of the sandbox section. */

static PyMethodDef module_methods[] = {
    {"clone", (PyCFunction)(void (*)(void))pyclone_clone,
     METH_FASTCALL | METH_KEYWORDS, clone_doc},
    {"clone3", (PyCFunction)(void (*)(void))pyclone_clone3,
     METH_VARARGS | METH_KEYWORDS, clone3_doc},
    {"kcmp", pyclone_kcmp, METH_VARARGS, kcmp_doc},
    /* clone3 issue */
    {"pidfd_send_signal", pyclone_pidfd_send_signal, METH_VARARGS,
     pidfd_send_signal_doc},
    {"unshare", pyclone_unshare, METH_O, unshare_doc},
    {"setns", pyclone_setns, METH_VARARGS, setns_doc},
    {"_set_error_hook", pyclone_set_error_hook, METH_O, set_error_hook_doc},
    {"_tstate_id", pyclone_tstate_id, METH_NOARGS, tstate_id_doc},
    {"_thread_count", pyclone_thread_count, METH_NOARGS, thread_count_doc},
    SANDBOX_METHODS
    ACTION_METHODS
    VM_METHODS
    {NULL, NULL, 0, NULL},
};

/* ------------------------------------------------------------------ */
/* Module init (multi-phase) */

PyDoc_STRVAR(unsupported_doc,
             "A flag set or child kind that pyclone refuses.\n\n"
             "The message says why, and what to use instead.");

static int
module_exec(PyObject *module)
{
    module_state *st = get_state(module);
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
    if (sandbox_add_constants(module) < 0) {
        return -1;
    }
    if (actions_init(module) < 0) {
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
    if (vm_module_init(module) < 0) {
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = get_state(module);
    Py_VISIT(st->UnsupportedFlags);
    Py_VISIT(st->error_hook);
    return 0;
}

static int
module_clear(PyObject *module)
{
    module_state *st = get_state(module);
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
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
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
