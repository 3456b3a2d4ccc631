/*
 * pidfd.c: pidfd_send_signal(2), with an optional sigqueue-style value, and
 * the blocking wait of a fork-like task: its pidfd polled while its result
 * pipe is read.  Thin entry points; the policy is in pyclone.pidfd and
 * pyclone._task.
 */
#include "pyclone.h"

#include <limits.h>
#include <poll.h>
#include <time.h>

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
    "ESRCH once the task has been reaped, even if its pid number was reused.\n"
    "pidfd may also be an Fd owner, read and used with no Python code in\n"
    "between (ESRCH once it is closed): no other thread or signal handler\n"
    "can close it and let a new descriptor take its number meanwhile.");

static PyObject *
pyclone_pidfd_send_signal(PyObject *Py_UNUSED(module), PyObject *args)
{
    int pidfd, sig;
    PyObject *target, *value = Py_None;
    if (!PyArg_ParseTuple(args, "Oi|O:pidfd_send_signal", &target, &sig,
                          &value)) {
        return NULL;
    }
    int owned = pyclone_fd_owner_number(target);
    if (owned == -2) {
        pidfd = pyclone_as_int(target);
        if (pidfd == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    else {
        pidfd = owned;
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
    if (owned == -1) {
        errno = ESRCH; /* collected: its pidfd was closed with it */
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (syscall(SYS_pidfd_send_signal, pidfd, sig, infop, 0) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* The result frame: a little-endian u64 payload size, then the payload. */
#define FRAME_HEADER 8
#define READ_CHUNK 65536

enum { FRAME_OPEN, FRAME_DONE, FRAME_CLOSE };

/* What the bytes in buffer say: the frame is incomplete, complete, or
 * declares more than limit bytes (then only its header is kept); -1 with
 * an exception set. */
static int
frame_state(PyObject *buffer, long long limit)
{
    Py_ssize_t have = PyByteArray_GET_SIZE(buffer);
    if (have < FRAME_HEADER) {
        return FRAME_OPEN;
    }
    const unsigned char *b = (const unsigned char *)PyByteArray_AS_STRING(buffer);
    uint64_t size = 0;
    for (int i = FRAME_HEADER - 1; i >= 0; i--) {
        size = (size << 8) | b[i];
    }
    if (limit >= 0 && size > (uint64_t)limit) {
        return PyByteArray_Resize(buffer, FRAME_HEADER) < 0 ? -1 : FRAME_CLOSE;
    }
    return (uint64_t)(have - FRAME_HEADER) >= size ? FRAME_DONE : FRAME_OPEN;
}

/* One read of what fd has (it polled readable) appended to buffer: 1 if
 * bytes came, 0 at end of file, -1 with an exception set. */
static int
read_into(int fd, PyObject *buffer)
{
    Py_ssize_t have = PyByteArray_GET_SIZE(buffer);
    if (PyByteArray_Resize(buffer, have + READ_CHUNK) < 0) {
        return -1;
    }
    ssize_t n;
    do { /* a readable pipe does not block: retrying cannot delay a handler */
        n = read(fd, PyByteArray_AS_STRING(buffer) + have, READ_CHUNK);
    } while (n < 0 && errno == EINTR);
    int saved = errno;
    if (PyByteArray_Resize(buffer, have + (n > 0 ? n : 0)) < 0) {
        return -1;
    }
    if (n < 0) {
        if (saved == EAGAIN) {
            return 1; /* another reader took it: poll again */
        }
        errno = saved;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return n > 0;
}

PyDoc_STRVAR(
    await_exit_doc,
    "_await_exit($module, pidfd, fd, buffer, limit, timeout=-1.0, reap=True, /)\n"
    "--\n\n"
    "Wait until the task of pidfd ends (at most timeout seconds; < 0: no\n"
    "limit), reading its result frame from fd (-1: none) into the bytearray\n"
    "buffer meanwhile and once it has ended, then reap it (unless reap is\n"
    "false): (ended, returncode, close_fd).  close_fd is True when fd\n"
    "reached end of file or the frame declared more than limit bytes\n"
    "(limit < 0: no limit), whose header alone is kept: then the call\n"
    "returns at once, ended False unless the task has ended too, for the\n"
    "caller to close fd and call again.  Otherwise ended is False when the\n"
    "time ran out first.  returncode is None unless reaped, or if the\n"
    "kernel has no status for this process (ECHILD).\n\n"
    "pidfd and fd are ints or Fd owners, whose numbers are read with no\n"
    "Python code before their use (a closed pidfd owner: None at once, a\n"
    "closed fd owner: no pipe).\n\n"
    "Signal handlers run during the wait; one that raises ends it, with\n"
    "what was read kept in buffer.  Once handlers have run the call returns\n"
    "None: a handler may have collected the task or closed its descriptors\n"
    "(and their numbers been reused), so the caller looks again before it\n"
    "calls again.");

/* Milliseconds from now to deadline, rounded up (poll must not wake early),
 * 0 once it has passed. */
static int
ms_until(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns = (long long)(deadline->tv_sec - now.tv_sec) * 1000000000LL +
                   (deadline->tv_nsec - now.tv_nsec);
    if (ns <= 0) {
        return 0;
    }
    long long ms = (ns + 999999) / 1000000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* A descriptor given as an int or an Fd owner (-1 once closed). */
static int
descriptor_arg(PyObject *obj, int *out)
{
    int owned = pyclone_fd_owner_number(obj);
    if (owned != -2) {
        *out = owned;
        return 0;
    }
    *out = pyclone_as_int(obj);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *
pyclone_await_exit(PyObject *Py_UNUSED(module), PyObject *args)
{
    int pidfd, fd;
    PyObject *pidfd_arg, *fd_arg, *buffer;
    long long limit;
    double timeout = -1.0;
    int reap = 1;
    if (!PyArg_ParseTuple(args, "OOO!L|dp:_await_exit", &pidfd_arg, &fd_arg,
                          &PyByteArray_Type, &buffer, &limit, &timeout,
                          &reap)) {
        return NULL;
    }
    if (descriptor_arg(pidfd_arg, &pidfd) < 0 || descriptor_arg(fd_arg, &fd) < 0) {
        return NULL;
    }
    if (pidfd < 0) {
        Py_RETURN_NONE; /* its owner was closed: the task has been collected */
    }
    if (timeout != timeout) {
        PyErr_SetString(PyExc_ValueError, "_await_exit() timeout must not be NaN");
        return NULL;
    }
    int timed = timeout >= 0;
    struct timespec deadline = {0, 0};
    if (timed) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        /* past any real wait (~31 years) counts as no limit */
        if (timeout > 1e9) {
            timed = 0;
        }
        else {
            double whole = (double)(long long)timeout;
            deadline.tv_sec += (time_t)whole;
            deadline.tv_nsec += (long)((timeout - whole) * 1e9);
            if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec += 1;
                deadline.tv_nsec -= 1000000000L;
            }
        }
    }
    struct pollfd p[2] = {{.fd = pidfd, .events = POLLIN},
                          {.fd = fd, .events = POLLIN}};
    int reading = fd >= 0;
    int st = frame_state(buffer, limit);
    if (st < 0) {
        return NULL;
    }
    reading = reading && st == FRAME_OPEN;
    int close_fd = fd >= 0 && st == FRAME_CLOSE;
    int ended = 0;
    for (;;) {
        int r;
        int wait_ms = timed ? ms_until(&deadline) : -1;
        /* Once the task has ended, only what the pipe holds now is read. */
        Py_BEGIN_ALLOW_THREADS
        r = ended ? poll(p + 1, 1, 0) : poll(p, reading ? 2 : 1, wait_ms);
        Py_END_ALLOW_THREADS
        if (r < 0) {
            if (errno != EINTR) {
                return PyErr_SetFromErrno(PyExc_OSError);
            }
            if (PyErr_CheckSignals() < 0) {
                return NULL;
            }
            /* Python code may have run: these numbers may no longer be
             * the task's.  The caller looks, and calls again. */
            Py_RETURN_NONE;
        }
        if (r == 0 && !ended) {
            /* the time ran out: the task runs on, unreaped */
            return Py_BuildValue("(OOO)", Py_False, Py_None,
                                 close_fd ? Py_True : Py_False);
        }
        if (reading && p[1].revents) {
            int got = read_into(fd, buffer);
            if (got < 0) {
                return NULL;
            }
            st = got ? frame_state(buffer, limit) : FRAME_CLOSE;
            if (st < 0) {
                return NULL;
            }
            reading = st == FRAME_OPEN;
            close_fd = st == FRAME_CLOSE;
        } else if (ended) {
            break; /* nothing more there now */
        }
        if (!ended && p[0].revents) {
            ended = 1;
        }
        if (close_fd && !ended) {
            /* The caller closes fd now and waits again: a sender blocked
             * on a full pipe with a refused frame gets EPIPE, and ends. */
            return Py_BuildValue("(OOO)", Py_False, Py_None, Py_True);
        }
        if (ended && !reading) {
            break;
        }
    }
    if (!reap) {
        return Py_BuildValue("(OOO)", Py_True, Py_None,
                             close_fd ? Py_True : Py_False);
    }
    siginfo_t info;
    int r;
    memset(&info, 0, sizeof(info));
    do {
        r = waitid((idtype_t)3 /* P_PIDFD */, (id_t)pidfd, &info,
                   WEXITED | WALL_OPTION);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (errno != ECHILD) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return Py_BuildValue("(OOO)", Py_True, Py_None,
                             close_fd ? Py_True : Py_False);
    }
    int code = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
    return Py_BuildValue("(OiO)", Py_True, code, close_fd ? Py_True : Py_False);
}

PyMethodDef pyclone_pidfd_methods[] = {
    {"_await_exit", pyclone_await_exit, METH_VARARGS, await_exit_doc},
    {"pidfd_send_signal", pyclone_pidfd_send_signal, METH_VARARGS,
     pidfd_send_signal_doc},
    {NULL, NULL, 0, NULL},
};
