/*
 * _pyclone_internal.c: the few operations of the "borrowed interpreter"
 * (Python callables in CLONE_VM|CLONE_VFORK children, see _pyclone.c) that
 * need CPython's internal headers.
 *
 * They live in their own translation unit because Py_BUILD_CORE must be
 * defined before Python.h is included, and that must not change how the
 * rest of the extension is compiled.  Every function here is guarded per
 * minor version: the layouts differ between 3.10, 3.11, 3.12 and 3.13, and
 * other versions are refused by _pyclone.c before anything here is called.
 */
#ifndef Py_BUILD_CORE_MODULE
#define Py_BUILD_CORE_MODULE 1
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_pyclone_internal.h"

#if PY_VERSION_HEX < 0x030C0000
#include "internal/pycore_runtime.h" /* _PyRuntime.gilstate.autoTSSkey */
#endif
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
#include "internal/pycore_frame.h" /* _PyInterpreterFrame.previous */
#endif

void
pyclone_gilstate_bind(PyThreadState *ts)
{
#if PY_VERSION_HEX < 0x030C0000
    /* 3.10 and 3.11 do not rebind the PyGILState slot on a swap; without
     * this, PyGILState_Check() is false in the child and the debug
     * allocator aborts.  Must happen before the swap (debug builds check
     * the slot against the new thread state). */
    (void)PyThread_tss_set(&_PyRuntime.gilstate.autoTSSkey, ts);
#else
    (void)ts; /* tstate_activate() rebinds it */
#endif
}

PyThreadState *
pyclone_tstate_unchecked(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyThreadState_GetUnchecked();
#else
    return _PyThreadState_UncheckedGet();
#endif
}

void
pyclone_sever(PyThreadState *ts)
{
#if PY_VERSION_HEX < 0x030B0000
    /* 3.10: frames are heap objects chained through strong f_back
     * references; only the CFrame lives on the (dead) C stack. */
    ts->frame = NULL;
    ts->cframe = &ts->root_cframe;
#elif PY_VERSION_HEX < 0x030D0000
    /* 3.11/3.12: the chain starts at the current CFrame, which is on the
     * child's stack (still intact: nothing has run there since the vfork
     * ended).  3.12 also links entry frames that live on that stack. */
    struct _PyInterpreterFrame *f = ts->cframe->current_frame;
    while (f != NULL) {
        struct _PyInterpreterFrame *next = f->previous;
        f->previous = NULL;
        f = next;
    }
    ts->root_cframe.current_frame = NULL;
    ts->cframe = &ts->root_cframe;
#elif PY_VERSION_HEX < 0x030E0000
    struct _PyInterpreterFrame *f = ts->current_frame;
    while (f != NULL) {
        struct _PyInterpreterFrame *next = f->previous;
        f->previous = NULL;
        f = next;
    }
    ts->current_frame = NULL;
#endif
    /* The handled-exception stack may point into generator frames of the
     * dead chain: start it over from the thread state's own item. */
    ts->exc_info = &ts->exc_state;
}
