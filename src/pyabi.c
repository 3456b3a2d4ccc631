/*
 * pyabi.c: the few operations of the borrowed interpreter (Python
 * callables in CLONE_VM|CLONE_VFORK children, see borrowed.c) that need
 * CPython's internal headers; declared in pyabi.h.
 *
 * They live in their own translation unit because Py_BUILD_CORE must be
 * defined before Python.h is included, and that must not change how the
 * rest of the extension is compiled.  Every function here is guarded per
 * minor version: the layouts differ between 3.10, 3.11, 3.12, 3.13 and
 * 3.14/3.15, and other versions are refused (PYCLONE_VM_SUPPORTED, pyabi.h) before
 * anything here is called.
 */
#ifndef Py_BUILD_CORE_MODULE
#define Py_BUILD_CORE_MODULE 1
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "pyabi.h"

/* _PyRuntime: .gilstate.autoTSSkey (3.10/3.11), .main_thread */
#include "internal/pycore_runtime.h"
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
#include "internal/pycore_frame.h" /* _PyInterpreterFrame.previous */
#elif PY_VERSION_HEX >= 0x030E0000
/* 3.14 moved the frame struct out of pycore_frame.h */
#include "internal/pycore_interpframe_structs.h" /* .previous */
#include "internal/pycore_pythonrun.h"           /* _PyOS_STACK_MARGIN_BYTES */
#include "internal/pycore_tstate.h"              /* _PyThreadStateImpl.c_stack_* */
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
#else
    /* 3.13+: the chain starts at the thread state's current frame */
    struct _PyInterpreterFrame *f = ts->current_frame;
    while (f != NULL) {
        struct _PyInterpreterFrame *next = f->previous;
        f->previous = NULL;
        f = next;
    }
#if PY_VERSION_HEX >= 0x030F0000
    /* 3.15: an idle thread state's chain is its own sentinel base frame,
     * which lives in the thread state, not on the dead stack */
    ts->current_frame = ts->base_frame;
#else
    ts->current_frame = NULL;
#endif
#endif
    /* The handled-exception stack may point into generator frames of the
     * dead chain: start it over from the thread state's own item. */
    ts->exc_info = &ts->exc_state;
}

void
pyclone_set_stack(PyThreadState *ts, char *low, char *high)
{
#if PY_VERSION_HEX >= 0x030E0000
    /* A thread state without limits takes them, when first attached, from
     * pthread_getattr_np(pthread_self()): in the child that is the
     * caller's thread stack, which an mmap'ed child stack is not part of,
     * and the child's first recursion check would be a fatal "stack
     * overflow".  The same margins as CPython's tstate_set_stack().
     * (PyUnstable_ThreadState_SetStackProtection does this too, but not
     * in every 3.14 release.) */
    _PyThreadStateImpl *impl = (_PyThreadStateImpl *)ts;
    impl->c_stack_top = (uintptr_t)high;
    impl->c_stack_hard_limit = (uintptr_t)low + _PyOS_STACK_MARGIN_BYTES;
    impl->c_stack_soft_limit = (uintptr_t)low + 2 * _PyOS_STACK_MARGIN_BYTES;
#else
    /* 3.10-3.13 count recursion depth, not stack addresses */
    (void)ts;
    (void)low;
    (void)high;
#endif
}

/* No thread has this identity: pthread_self() is the address of a thread
 * descriptor, never all ones. */
#define NO_THREAD (~0UL)

int
pyclone_main_thread_withdraw(void)
{
    if (_PyRuntime.main_thread != PyThread_get_thread_ident()) {
        return 0; /* not the main thread, or already withdrawn */
    }
    _PyRuntime.main_thread = NO_THREAD;
    return 1;
}

void
pyclone_main_thread_restore(void)
{
    _PyRuntime.main_thread = PyThread_get_thread_ident();
}
