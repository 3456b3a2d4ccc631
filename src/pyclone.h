/*
 * pyclone.h: what the files of the pyclone._pyclone extension share: the
 * kernel's flag values, struct clone_args, the module state, the request
 * that clone() and clone3() build, and the functions one file provides to
 * the others (all named pyclone_*, hidden from the shared object's symbol
 * table).  Version-specific details are in pyabi.h.
 */
#ifndef PYCLONE_H
#define PYCLONE_H

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

#include "pyabi.h"

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

/* Smallest separate stack for a Python child on a borrowed interpreter:
 * the main thread's default (RLIMIT_STACK); with less, deep C recursion
 * overflows before the interpreter's counters. */
#define VM_MIN_MMAP_STACK (8 * 1024 * 1024)

/* ------------------------------------------------------------------ */
/* Module state */

typedef struct {
    PyObject *UnsupportedFlags; /* ValueError subclass */
    PyObject *error_hook;       /* callable(errno, flags, api, exit_signal) */
} module_state;

static inline module_state *
pyclone_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
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

/* Close fd if it is open, keeping errno. */
static inline void
pyclone_close_quietly(int fd)
{
    if (fd >= 0) {
        int saved = errno;
        close(fd);
        errno = saved;
    }
}

#pragma GCC visibility push(hidden)

/* errors.c: failures as Python exceptions */
const char *pyclone_api_name(enum api_kind api);
/* Raise UnsupportedFlags with a formatted message; returns NULL. */
PyObject *pyclone_raise_unsupported(PyObject *module, const char *fmt, ...);
/* Raise OSError(err) for a failed clone, through the package's error hook
 * when one is installed; returns NULL. */
PyObject *pyclone_raise_clone_error(PyObject *module, int err,
                                    const clone_request *req);

/* clone.c: the clone()/clone3() entry points */
int pyclone_convert_flags(PyObject *obj, unsigned long long *out);
/* exec_mask=: 1 with *out set, 0 for None, -1 with an exception. */
int pyclone_convert_exec_mask(PyObject *obj, sigset_t *out);
extern PyMethodDef pyclone_clone_methods[];

/* safety.c: refuse requests that would corrupt or hang the caller */
int pyclone_check_request(PyObject *module, clone_request *req);
int pyclone_vm_check(PyObject *module, const clone_request *req);

/* childexit.c: how a Python child ends */
void pyclone_flush_std_streams(void);
int pyclone_system_exit_status(void);

/* threads.c: counting this process's threads */
long pyclone_count_threads(void);
long pyclone_count_threads_settled(void);
extern PyMethodDef pyclone_threads_methods[];

/* fork.c: children without CLONE_VM running a Python callable */
PyObject *pyclone_spawn_forklike(PyObject *module, clone_request *req);
int pyclone_in_forklike_child(void);

/* borrowed.c: Python callables in CLONE_VM|CLONE_VFORK children */
PyObject *pyclone_spawn_borrowed(PyObject *module, clone_request *req);
int pyclone_borrowed_init(PyObject *module);
extern PyMethodDef pyclone_borrowed_methods[];

/* actions_program.c / actions.c: C-level children running an action */
typedef struct ProgramObject ProgramObject;
ProgramObject *pyclone_action_program(PyObject *fn);
PyObject *pyclone_spawn_program(PyObject *module, clone_request *req,
                                ProgramObject *prog, const sigset_t *exec_mask);
int pyclone_actions_init(PyObject *module);
extern PyMethodDef pyclone_actions_methods[];

/* fdowner.c: _pyclone.Fd, a descriptor closed exactly once */
int pyclone_fdowner_init(PyObject *module);
int pyclone_fd_owner_number(PyObject *obj);

/* floor.c, pidfd.c, kcmp.c, nsutil.c, seccomp.c: thin system-call entry points */
extern PyMethodDef pyclone_floor_methods[];
extern PyMethodDef pyclone_pidfd_methods[];
extern PyMethodDef pyclone_kcmp_methods[];
extern PyMethodDef pyclone_nsutil_methods[];
int pyclone_nsutil_add_constants(PyObject *module);
extern PyMethodDef pyclone_seccomp_methods[];

#pragma GCC visibility pop

#endif
