/*
 * actions.h: what the files of the actions machine share.  An action is a
 * flat program of raw system calls compiled before the clone
 * (actions_program.c).  The child starts on an mmap'd stack with a guard
 * page (actions_mem.c, trampoline_*.c), runs the program without touching
 * libc or Python state (actions_child.c: no errno, no TLS, no locks, so it
 * is valid with CLONE_VM and CLONE_THREAD, with or without CLONE_VFORK) and
 * ends with SYS_exit: it never returns into the caller's frames.  It
 * reports through a MAP_SHARED page (struct act_page), which the parent
 * sees for shared-VM and copy children alike; the page also holds the
 * CLONE_CHILD_SETTID/CLEARTID word used to join threads and to know when a
 * shared-VM child has left its stack (actions_run.c).  A stack is reused or
 * unmapped only after the kernel cleared that word (CLONE_VM) or at once
 * (copy children have their own copy of it).
 */
#ifndef PYCLONE_ACTIONS_H
#define PYCLONE_ACTIONS_H

#include "pyclone.h"

#include <linux/futex.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/mman.h>
#include <time.h>

extern char **environ;

/* x86_64 has an assembly trampoline (trampoline_x86_64.c) that starts the
 * child on its stack with clone or clone3 and makes system calls without
 * touching errno; elsewhere (trampoline_generic.c) glibc's clone() and
 * syscall() stand in, and clone3 with an action is refused. */
#if defined(__x86_64__)
#define ACT_ASM_CLONE 1
#else
#define ACT_ASM_CLONE 0
#endif

#define ACT_STORE(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELEASE)
#define ACT_LOAD(field) __atomic_load_n(&(field), __ATOMIC_ACQUIRE)

enum act_opcode {
    OP_EXIT,
    OP_SLEEP,
    OP_WRITE,
    OP_CHDIR,
    OP_CLOSE,
    OP_IGNORE_SIGNAL,
    OP_DEFAULT_SIGNAL,
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

/* _action_program: an action compiled for the child (ProgramObject) */
struct ProgramObject {
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
    PyObject *on_end;     /* callable() once a CLONE_SIGHAND task ended, or NULL */
    int has_exec;
    int ignores_sigchld;
};

/* _action_run: the stack and report page of one task running a program */
typedef struct {
    PyObject_HEAD
    struct act_page *page;
    char *stack; /* NULL once given back */
    size_t stack_size;
    ProgramObject *prog;
    unsigned long long flags;
    int ended_hook_done; /* prog->on_end was called for this task */
} RunObject;

#pragma GCC visibility push(hidden)

/* trampoline_*.c */
/* A system call that returns -errno and (on x86_64) never touches errno,
 * which lives in TLS. */
long pyclone_act_sys(long n, long a, long b, long c, long d, long e, long f);
/* Byte copy for the child: no libc call. */
void pyclone_act_copy(char *dst, const char *src, size_t n);
#if ACT_ASM_CLONE
/* clone (nr = SYS_clone: a1 flags, a2 stack pointer, a3 ptid, a4 ctid,
 * a5 tls) or clone3 (a1 args, a2 size).  The parent stored fn and arg at
 * the child's stack pointer; the child pops them, calls fn(arg) and ends
 * with SYS_exit(fn's value). */
long pyclone_act_clone_asm(long nr, long a1, long a2, long a3, long a4,
                           long a5);
#endif

/* actions_child.c: the program run by the child */
int pyclone_act_child(void *arg);

/* actions_mem.c: stacks and report pages */
char *pyclone_act_stack_get(size_t size);
void pyclone_act_stack_put(char *base, size_t size);
struct act_page *pyclone_act_page_get(void);
void pyclone_act_page_put(struct act_page *pg, int reusable);
void pyclone_act_reclaim(void);
void pyclone_act_defer(struct act_page *pg, char *stack, size_t size,
                       PyObject *keep);

/* actions_program.c and actions_run.c: the two private types */
extern PyTypeObject pyclone_Program_Type;
extern PyTypeObject pyclone_Run_Type;
PyObject *pyclone_run_error(RunObject *self, PyObject *arg);
int pyclone_run_finish(RunObject *self);

#pragma GCC visibility pop

#endif
