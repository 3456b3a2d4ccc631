/*
 * threads.c: how many threads this process has, read from /proc: the raw
 * clone paths refuse or warn in a multi-threaded process, a CLONE_VM child
 * reports the threads it left behind, and _thread_count exposes the count.
 * The refusal counts after a short wait for threads that have just ended.
 */
#include "pyclone.h"

/* Number of threads of this process (field 20 of /proc/self/stat), or -1. */
long
pyclone_count_threads(void)
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

/* The thread count, after giving threads that have just ended a moment to
 * leave it.  A joined thread is still counted until the kernel has released
 * it, which comes after the CLONE_CHILD_CLEARTID wake-up that ends the join
 * and can take milliseconds on a busy machine: without the wait, a launch
 * right after Thread.join() would be refused.  Called with the GIL held; it
 * waits only while this interpreter has no other thread state (one is a live
 * Python thread, which no wait makes go) and at most SETTLE_NS. */
#define SETTLE_NS 1000000000LL

static int
other_thread_states(void)
{
    PyThreadState *self = PyThreadState_Get();
    PyThreadState *ts = PyInterpreterState_ThreadHead(PyThreadState_GetInterpreter(self));
    for (; ts != NULL; ts = PyThreadState_Next(ts)) {
        if (ts != self) {
            return 1;
        }
    }
    return 0;
}

static long long
monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

long
pyclone_count_threads_settled(void)
{
    long n = pyclone_count_threads();
    if (n <= 1 || other_thread_states()) {
        return n;
    }
    long long deadline = monotonic_ns() + SETTLE_NS;
    while (n > 1 && monotonic_ns() < deadline) {
        struct timespec pause = {0, 100000};
        nanosleep(&pause, NULL);
        n = pyclone_count_threads();
    }
    return n;
}

PyDoc_STRVAR(thread_count_doc,
             "_thread_count($module, /)\n"
             "--\n\n"
             "Number of threads in this process, from /proc/self/stat.");

static PyObject *
pyclone_thread_count(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(arg))
{
    long n = pyclone_count_threads();
    if (n < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromLong(n);
}

PyMethodDef pyclone_threads_methods[] = {
    {"_thread_count", pyclone_thread_count, METH_NOARGS, thread_count_doc},
    {NULL, NULL, 0, NULL},
};
