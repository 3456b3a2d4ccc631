/*
 * floor.c: _floor, launch+wait round trips timed from C with no Python in
 * the loop (fork, vfork+exec, pyclone's thread action, pthread,
 * posix_spawn): the floors the benchmarks compare pyclone against.
 */
#include "actions.h"

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
    pyclone_act_sys(SYS_execve, (long)"/bin/true", (long)argv, (long)envp, 0,
                    0, 0);
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
    return pyclone_act_clone_asm(SYS_clone, (long)flags, (long)top, 0,
                                 (long)ctid, 0);
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
            pyclone_act_sys(SYS_futex, (long)&pg->tid, FUTEX_WAIT, v, 0, 0, 0);
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
    char *stack = pyclone_act_stack_get(ACT_DEFAULT_STACK);
    struct act_page *pg = stack ? pyclone_act_page_get() : NULL;
    if (times == NULL || (heap && heapmem == NULL) || pg == NULL) {
        PyMem_Free(times);
        PyMem_RawFree(heapmem);
        pyclone_act_stack_put(stack, ACT_DEFAULT_STACK);
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
    pyclone_act_stack_put(stack, ACT_DEFAULT_STACK);
    pyclone_act_page_put(pg, 1);
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

PyMethodDef pyclone_floor_methods[] = {
    {"_floor", pyclone_floor, METH_VARARGS, floor_doc},
    {NULL, NULL, 0, NULL},
};
