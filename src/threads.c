/*
 * threads.c: how many threads this process has, read from /proc: the raw
 * clone paths refuse or warn in a multi-threaded process, a CLONE_VM child
 * reports the threads it left behind, and _thread_count exposes the count.
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
