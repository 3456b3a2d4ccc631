/* Version-specific helpers of the borrowed-interpreter path; see
 * _pyclone_internal.c.  Call them with the thread state layout of the
 * running interpreter only (_pyclone.c refuses unknown versions). */
#ifndef PYCLONE_INTERNAL_H
#define PYCLONE_INTERNAL_H

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

#endif
