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

/* Run fn() in a fork-like child and never return. */
static void _Py_NO_RETURN
child_run_callable(PyObject *fn)
{
    int status;
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
    if (f & F_VM) {
        raise_unsupported(
            module,
            "CLONE_VM with a Python callable is not supported by this "
            "build: the child would run Python in the caller's memory; "
            "drop CLONE_VM (copy-on-write child) or use a pyclone.actions "
            "action");
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

static PyObject *
do_spawn(PyObject *module, clone_request *req)
{
    if (check_request(module, req) < 0) {
        return NULL;
    }
    if (PySys_Audit("pyclone.clone", "sKi", api_name(req->api), req->flags,
                    req->exit_signal) < 0) {
        return NULL;
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
    "Flag sets that plain fork() can serve use fork(); the others use the\n"
    "raw system call, which is refused in a multi-threaded process unless\n"
    "allow_threads=True.  stack_size is unused by fork-like children, which\n"
    "continue on a copy-on-write copy of the caller's stack (it is still\n"
    "checked: 0 to 4 GiB).  With CLONE_PIDFD the descriptor the kernel returns\n"
    "is closed at once: use clone3(pidfd=True) to keep it.\n\n"
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
    "Child semantics are those of clone().");

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
