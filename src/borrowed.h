/*
 * borrowed.h: what the two halves of the borrowed interpreter share: the
 * context of one CLONE_VM child running a Python callable (borrowed.c
 * starts it and recovers after it, borrowed_child.c runs in it).
 */
#ifndef PYCLONE_BORROWED_H
#define PYCLONE_BORROWED_H

#include "pyclone.h"

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
    sigset_t orig_mask;          /* the caller's, restored after the clone */
    sigset_t exec_mask;          /* what child_exec() installs before execve */
    struct vm_ctx *next;         /* list of children running now */
    /* written by the child while the caller sleeps in the kernel, and
     * left wherever it was if the child dies: read with __atomic loads */
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

#pragma GCC visibility push(hidden)

/* ChildExitRequest and ChildExecRequest (BaseException subclasses raised by
 * pyclone.child_exit/child_exec); created by pyclone_borrowed_init. */
extern PyObject *pyclone_vm_exit_request;
extern PyObject *pyclone_vm_exec_request;

/* pyclone_spawn_borrowed, with the mask the child's exec installs given:
 * a caller holding signals around the launch passes the mask it had
 * before (NULL: the mask at this call). */
PyObject *pyclone_spawn_borrowed_masked(PyObject *module, clone_request *req,
                                        const sigset_t *exec_mask);

/* The child's entry point, called by glibc's clone() on the child stack. */
int pyclone_vm_child_main(void *arg);
/* Free an array made by the child for an exec request. */
void pyclone_vm_free_strings(char **v);

#pragma GCC visibility pop

#endif
