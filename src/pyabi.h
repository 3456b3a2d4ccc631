/*
 * pyabi.h: every CPython-version-specific detail of the extension, in one
 * place.  The other files include it (through pyclone.h) and carry no
 * version tests of their own; what needs CPython's internal headers is
 * declared here and defined in pyabi.c, a Py_BUILD_CORE translation unit.
 *
 * Include it after Python.h.
 */
#ifndef PYCLONE_PYABI_H
#define PYCLONE_PYABI_H

#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Python callables in CLONE_VM children borrow the caller's interpreter:
 * only on GIL builds whose thread state layout pyabi.c knows (3.10 to
 * 3.15).  Elsewhere the request is refused with UnsupportedFlags. */
#if !defined(Py_GIL_DISABLED) && PY_VERSION_HEX >= 0x030A0000 && \
    PY_VERSION_HEX < 0x03100000
#define PYCLONE_VM_SUPPORTED 1
#else
#define PYCLONE_VM_SUPPORTED 0
#endif

#ifndef Py_NO_INLINE /* 3.10 */
#define Py_NO_INLINE __attribute__((noinline))
#endif

/* os.fork() warns when the process has threads from 3.12 on; pyclone's
 * plain-fork path does the same where Python does. */
#define PYCLONE_FORK_WARNS_THREADS (PY_VERSION_HEX >= 0x030C0000)

/* Module slots that only newer versions know: refuse subinterpreters
 * (3.12+) and declare that the module needs the GIL (3.13+). */
#if PY_VERSION_HEX >= 0x030C0000
#define PYCLONE_SLOT_INTERPRETERS                                            \
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#else
#define PYCLONE_SLOT_INTERPRETERS
#endif
#if PY_VERSION_HEX >= 0x030D0000
#define PYCLONE_SLOT_GIL {Py_mod_gil, Py_MOD_GIL_USED},
#else
#define PYCLONE_SLOT_GIL
#endif

static inline int
pyclone_is_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

/* Take the raised exception and return its normalised value.  *type and
 * *tb receive references the caller releases (NULL from 3.12 on, where the
 * value carries both). */
static inline PyObject *
pyclone_fetch_exception(PyObject **type, PyObject **tb)
{
    PyObject *value;
#if PY_VERSION_HEX >= 0x030C0000
    value = PyErr_GetRaisedException();
    *type = NULL;
    *tb = NULL;
#else
    PyErr_Fetch(type, &value, tb);
    PyErr_NormalizeException(type, &value, tb);
#endif
    return value;
}

/* Record the calling task's id as ts's native thread id (3.11+ have the
 * field; threading.get_native_id() reads it). */
static inline void
pyclone_tstate_set_native_id(PyThreadState *ts)
{
#if PY_VERSION_HEX >= 0x030B0000
    ts->native_thread_id = (unsigned long)syscall(SYS_gettid);
#else
    (void)ts;
#endif
}

/* obj as a C int, -1 with an exception on error (PyLong_AsInt is 3.13+). */
static inline int
pyclone_as_int(PyObject *obj)
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

/* Defined in pyabi.c, which sees CPython's internal headers.  Call them
 * only where PYCLONE_VM_SUPPORTED is 1. */
#pragma GCC visibility push(hidden)

/* 3.10/3.11: bind the PyGILState slot of this OS thread to ts (no-op on
 * 3.12+, where PyThreadState_Swap does it). */
void pyclone_gilstate_bind(PyThreadState *ts);

/* The current thread state, or NULL, without fatal checks. */
PyThreadState *pyclone_tstate_unchecked(void);

/* Cut an abandoned thread state loose from its dead frames: unlink every
 * frame of its chain from the one below it and reset the current-frame
 * pointers, so nothing reaches the dead C stack through it.  The thread
 * state and its data stack must then be leaked, never freed. */
void pyclone_sever(PyThreadState *ts);

/* Tell ts, before it is first attached, that it runs on the stack
 * [low, high): 3.14+ check recursion against stack addresses (no-op
 * before). */
void pyclone_set_stack(PyThreadState *ts, char *low, char *high);

/* Signal handlers run only in the thread whose identity is
 * _PyRuntime.main_thread (PyThread_get_thread_ident(), i.e. pthread_self(),
 * which a CLONE_VM child shares with its caller: the child would run the
 * caller's handlers and pending calls, with the caller's flags, which are
 * shared memory).  If the calling thread is the main thread, make no
 * thread the main thread and return 1; else return 0.  Needs the GIL. */
int pyclone_main_thread_withdraw(void);
/* Make the calling thread the main thread again (after a withdraw that
 * returned 1).  Needs the GIL. */
void pyclone_main_thread_restore(void);

#pragma GCC visibility pop

#endif
