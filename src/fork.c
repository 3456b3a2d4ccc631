/*
 * fork.c: the fork-like path: a child without CLONE_VM gets a copy-on-write
 * image of the caller and runs a Python callable, exactly as after
 * os.fork().  Flag sets that glibc's fork() can serve go through it; the
 * others use the raw clone/clone3 system call.
 */
#include "pyclone.h"

#include <pthread.h>
#include <sys/mman.h>
#include <time.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

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
            status = pyclone_system_exit_status();
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
    pyclone_flush_std_streams();
    _exit(status);
}

/* True in a fork-like child made by pyclone (not in its own children),
 * for pyclone.child_exit/child_exec. */
int
pyclone_in_forklike_child(void)
{
    return forklike_child_pid != 0 && forklike_child_pid == getpid();
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


/* glibc caches each thread's id in its thread descriptor (struct pthread's
 * tid, read by pthread_getcpuclockid, pthread_kill, raise, ...).  A raw
 * clone must have the kernel write the child's id there
 * (CLONE_CHILD_SETTID), as glibc's own fork() does, or the child's glibc
 * acts on the caller's thread.  The field's offset is private to glibc and
 * set_tid_address no longer points at it (glibc 2.43 registers another
 * field), so it is found once by experiment: in a helper thread that
 * nobody else knows of, the word of its descriptor that holds its id and,
 * when changed, changes what pthread_getcpuclockid computes.  Exactly one
 * word must pass.  TID_OFFSET_UNKNOWN until probed, TID_OFFSET_NONE if no
 * single word passed. */
#define TID_OFFSET_UNKNOWN (-2)
#define TID_OFFSET_NONE (-1)
#define TID_SCAN_BYTES 4096
#define TID_PROBE_STACK (256 * 1024)
static Py_ssize_t glibc_tid_offset = TID_OFFSET_UNKNOWN; /* GIL */

typedef struct {
    Py_ssize_t found;
    pid_t tid;
} tid_probe;

static void *
tid_probe_thread(void *arg)
{
    tid_probe *probe = arg;
    Py_ssize_t *found = &probe->found;
    char *self = (char *)pthread_self();
    int tid = (int)syscall(SYS_gettid);
    probe->tid = tid;
    *found = TID_OFFSET_NONE;
    for (Py_ssize_t off = 0; off + (Py_ssize_t)sizeof(int) <= TID_SCAN_BYTES;
         off += (Py_ssize_t)sizeof(int)) {
        int *word = (int *)(self + off);
        if (*word != tid) {
            continue;
        }
        clockid_t before, after;
        if (pthread_getcpuclockid(pthread_self(), &before) != 0) {
            continue;
        }
        *word = tid + 1;
        int rc = pthread_getcpuclockid(pthread_self(), &after);
        *word = tid;
        if (rc == 0 && after != before) {
            if (*found != TID_OFFSET_NONE) {
                *found = TID_OFFSET_NONE; /* two candidates: trust neither */
                break;
            }
            *found = off;
        }
    }
    return NULL;
}

static Py_ssize_t
probe_tid_offset(void)
{
    /* The helper's stack is ours, with readable pages above it: glibc puts
     * the descriptor at the top of the stack it is given, so the scan
     * past the descriptor's end stays in mapped memory. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t above = (TID_SCAN_BYTES + page - 1) / page * page;
    size_t len = TID_PROBE_STACK + above;
    char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (mem == MAP_FAILED) {
        return TID_OFFSET_NONE;
    }
    tid_probe probe = {TID_OFFSET_NONE, 0};
    pthread_attr_t attr;
    pthread_t thread;
    sigset_t all, old;
    sigfillset(&all);
    if (pthread_attr_init(&attr) == 0) {
        if (pthread_attr_setstack(&attr, mem, TID_PROBE_STACK) == 0) {
            /* no signal handler may run on the helper */
            pthread_sigmask(SIG_SETMASK, &all, &old);
            int rc = pthread_create(&thread, &attr, tid_probe_thread, &probe);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            if (rc == 0) {
                pthread_join(thread, NULL);
                /* join returns before the kernel has removed the task: wait
                 * (up to a second), so that the next thread count is right */
                for (int i = 0; i < 1000 && probe.tid > 0 &&
                                syscall(SYS_tgkill, getpid(), probe.tid, 0) == 0;
                     i++) {
                    struct timespec ms = {0, 1000000};
                    nanosleep(&ms, NULL);
                }
            }
        }
        pthread_attr_destroy(&attr);
    }
    munmap(mem, len);
    return probe.found;
}

/* The address of the calling thread's cached id in glibc, proven to hold
 * gettid() now, or NULL with an exception set.  Needs the GIL. */
static int *
glibc_tid_address(const clone_request *req)
{
    if (glibc_tid_offset == TID_OFFSET_UNKNOWN) {
        /* with the GIL held: no Python thread may start between the
         * caller's thread count and the clone */
        glibc_tid_offset = probe_tid_offset();
    }
    if (glibc_tid_offset >= 0) {
        int *addr = (int *)((char *)pthread_self() + glibc_tid_offset);
        if (*addr == (int)syscall(SYS_gettid)) {
            return addr;
        }
    }
    PyErr_Format(PyExc_RuntimeError,
                 "%s(): cannot locate the C library's cached thread id, which "
                 "a raw clone must set in the child (or the child's C library "
                 "would act on this thread); use flags that plain fork() can "
                 "serve",
                 pyclone_api_name(req->api));
    return NULL;
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
PyObject *
pyclone_spawn_forklike(PyObject *module, clone_request *req)
{
    int plain = is_plain_fork(req);
    pid_t pid;
    int err = 0;
    int pidfd = -1;
    int vfork_pipe[2] = {-1, -1};
    unsigned long long flags = req->flags;

    if (!plain) {
        if (!req->allow_threads) {
            long n = pyclone_count_threads_settled();
            if (n > 1) {
                PyErr_Format(
                    PyExc_RuntimeError,
                    "%s(): this process has %ld threads; a raw clone does not "
                    "take the C library's malloc and stdio locks, so the "
                    "child could deadlock in malloc. Create tasks before "
                    "starting threads, use flags that plain fork() can "
                    "serve, or pass allow_threads=True to take the risk",
                    pyclone_api_name(req->api), n);
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
    flags &= ~(F_CHILD_SETTID | F_CHILD_CLEARTID);
    if (!plain) {
        /* make glibc's cached thread id right in the child, with the
         * address glibc's fork() passes for both */
        tid_addr = glibc_tid_address(req);
        if (tid_addr == NULL) {
            pyclone_close_quietly(vfork_pipe[0]);
            pyclone_close_quietly(vfork_pipe[1]);
            return NULL;
        }
        flags |= F_CHILD_SETTID | F_CHILD_CLEARTID;
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
        pyclone_close_quietly(vfork_pipe[0]);
        if (flags & F_FILES) {
            /* the fd table is the caller's: a collected socket would close
             * the caller's descriptor */
            PyGC_Disable();
        }
        child_run_callable(req->fn);
    }

    PyOS_AfterFork_Parent();
    pyclone_close_quietly(vfork_pipe[1]);
    if (pid < 0) {
        pyclone_close_quietly(vfork_pipe[0]);
        return pyclone_raise_clone_error(module, err, req);
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
    if (PYCLONE_FORK_WARNS_THREADS && plain) {
        /* os.fork() warns when the process has threads */
        long n = pyclone_count_threads();
        if (n > 1 &&
            PyErr_WarnFormat(PyExc_DeprecationWarning, 1,
                             "This process is multi-threaded, use of "
                             "%s() may lead to deadlocks in the child.",
                             pyclone_api_name(req->api)) < 0) {
            PyErr_Clear(); /* like os.fork: never fail after the child exists */
        }
    }
    if (req->api == API_CLONE) {
        pyclone_close_quietly(pidfd); /* legacy clone(): see the docstring */
        return PyLong_FromLong(pid);
    }
    if (!req->want_pidfd) {
        pyclone_close_quietly(pidfd);
        return Py_BuildValue("(iO)", pid, Py_None);
    }
    return Py_BuildValue("(ii)", pid, pidfd);
}
