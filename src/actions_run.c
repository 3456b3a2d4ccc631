/*
 * actions_run.c: _action_run, one task running a program: its stack and
 * report page, joining a CLONE_VM task through the tid word, reading its
 * outcome, cancelling it, and giving the memory back (deferred while the
 * task may still use it).
 */
#include "actions.h"

static void
run_release_impl(RunObject *self)
{
    if (self->page == NULL) {
        /* no task was started */
        pyclone_act_stack_put(self->stack, self->stack_size);
        self->stack = NULL;
        return;
    }
    if ((self->flags & F_VM) && ACT_LOAD(self->page->tid) != 0) {
        /* still on its stack, maybe writing into the program's buffers */
        pyclone_act_defer(self->page, self->stack, self->stack_size,
                          (PyObject *)self->prog);
    }
    else {
        pyclone_act_stack_put(self->stack, self->stack_size);
        pyclone_act_page_put(self->page, (self->flags & F_VM) != 0);
    }
    self->page = NULL;
    self->stack = NULL;
}

/* Release the run; if its CLONE_SIGHAND task has ended (the kernel cleared
 * the tid word at exit or exec), call the program's on_end once.  Returns
 * -1 with an exception when on_end raised (the run is released anyway). */
int
pyclone_run_finish(RunObject *self)
{
    int ended = self->page != NULL && (self->flags & F_SIGHAND) &&
                ACT_LOAD(self->page->tid) == 0 &&
                ACT_LOAD(self->page->state) != ACT_NEW;
    run_release_impl(self);
    if (!ended || self->ended_hook_done || self->prog->on_end == NULL) {
        return 0;
    }
    self->ended_hook_done = 1;
    PyObject *r = PyObject_CallNoArgs(self->prog->on_end);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static void
run_dealloc(RunObject *self)
{
    run_release_impl(self);
    Py_XDECREF(self->prog);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Wait (without the GIL) for the kernel to clear the tid word.  Returns 1
 * when cleared, 0 on timeout (timeout_ns < 0: none), -1 with an exception
 * if a signal handler raised.  EINTR is retried. */
static int
act_join(struct act_page *pg, long long timeout_ns)
{
    struct timespec end, now;
    clock_gettime(CLOCK_MONOTONIC, &end);
    if (timeout_ns >= 0) {
        end.tv_sec += (time_t)(timeout_ns / 1000000000LL);
        end.tv_nsec += (long)(timeout_ns % 1000000000LL);
        if (end.tv_nsec >= 1000000000L) {
            end.tv_sec++;
            end.tv_nsec -= 1000000000L;
        }
    }
    for (;;) {
        int v = ACT_LOAD(pg->tid);
        if (v == 0) {
            return 1;
        }
        struct timespec rel, *tp = NULL;
        if (timeout_ns >= 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            rel.tv_sec = end.tv_sec - now.tv_sec;
            rel.tv_nsec = end.tv_nsec - now.tv_nsec;
            if (rel.tv_nsec < 0) {
                rel.tv_sec--;
                rel.tv_nsec += 1000000000L;
            }
            if (rel.tv_sec < 0) {
                return 0;
            }
            tp = &rel;
        }
        long r;
        Py_BEGIN_ALLOW_THREADS
        r = pyclone_act_sys(SYS_futex, (long)&pg->tid, FUTEX_WAIT, v, (long)tp,
                            0, 0);
        Py_END_ALLOW_THREADS
        if (r == -EINTR && PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
}

/* The kernel clears the tid word early in a thread's exit; wait (briefly,
 * without the GIL) until the thread is released too, so that a joined thread
 * is gone from /proc/self/task, as a reaped process is gone from /proc. */
static void
wait_thread_released(pid_t tid)
{
    pid_t tgid = getpid();
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        if (syscall(SYS_tgkill, tgid, tid, 0) < 0 && errno == ESRCH) {
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000000000L +
                (now.tv_nsec - start.tv_nsec) > 100000000L) {
            break; /* 100 ms: never hang a join on this */
        }
        sched_yield();
    }
    Py_END_ALLOW_THREADS
}

/* The join of join() and collect(): 1 joined, 0 timed out, -1 with an
 * exception (a signal handler raised; nothing changed). */
static int
run_join_impl(RunObject *self, long long ns, const char *what)
{
    if (self->page == NULL || !(self->flags & F_VM)) {
        PyErr_Format(PyExc_ValueError,
                     "%s() needs a CLONE_VM task that was not released", what);
        return -1;
    }
    int tid = ACT_LOAD(self->page->tid);
    int r = act_join(self->page, ns);
    if (r == 1) {
        if ((self->flags & F_THREAD) && tid > 0) {
            wait_thread_released(tid);
        }
        pyclone_act_reclaim();
    }
    return r;
}

static PyObject *
run_join(RunObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "join(timeout=None)");
        return NULL;
    }
    long long ns = -1;
    if (nargs == 1 && args[0] != Py_None) {
        double t = PyFloat_AsDouble(args[0]);
        if (t == -1.0 && PyErr_Occurred()) {
            return NULL;
        }
        if (t != t) {
            PyErr_SetString(PyExc_ValueError, "join() timeout must not be NaN");
            return NULL;
        }
        ns = t <= 0 ? 0 : (t > 9e9 ? 9000000000000000000LL : (long long)(t * 1e9));
    }
    int r = run_join_impl(self, ns, "join");
    if (r < 0) {
        return NULL;
    }
    return PyBool_FromLong(r);
}

/* A thread task's whole wait: join(None), the returncode its report gives
 * (a cancel reads as the signal, an exec or a kill before the report as
 * unknown), the failed step's error, and the release when the program has
 * no on_end (which the caller runs with release() once its Task is marked
 * ended).  If a signal handler raises, nothing has changed. */
static PyObject *
run_collect(RunObject *self, PyObject *Py_UNUSED(arg))
{
    if (run_join_impl(self, -1, "collect") < 0) {
        return NULL;
    }
    PyObject *error = pyclone_run_error(self, NULL);
    if (error == NULL) {
        return NULL;
    }
    int state = ACT_LOAD(self->page->state);
    int code = ACT_LOAD(self->page->exit_code);
    PyObject *returncode;
    if (state == ACT_CANCELLED) {
        returncode = PyLong_FromLong(-(code - 128));
    }
    else if (state == ACT_EXITED || state == ACT_FAILED) {
        returncode = PyLong_FromLong(code);
    }
    else {
        returncode = Py_NewRef(Py_None);
    }
    if (returncode == NULL) {
        Py_DECREF(error);
        return NULL;
    }
    int released = self->prog->on_end == NULL;
    if (released) {
        run_release_impl(self);
    }
    return Py_BuildValue("(NNO)", returncode, error,
                         released ? Py_True : Py_False);
}

static PyObject *
run_outcome(RunObject *self, PyObject *Py_UNUSED(arg))
{
    if (self->page == NULL) {
        PyErr_SetString(PyExc_ValueError, "the task's report was released");
        return NULL;
    }
    struct act_page *pg = self->page;
    int state = ACT_LOAD(pg->state);
    return Py_BuildValue("(iiii)", state, ACT_LOAD(pg->exit_code),
                         ACT_LOAD(pg->step), ACT_LOAD(pg->err));
}

PyObject *
pyclone_run_error(RunObject *self, PyObject *Py_UNUSED(arg))
{
    if (self->page == NULL || ACT_LOAD(self->page->state) != ACT_FAILED) {
        Py_RETURN_NONE;
    }
    int step = ACT_LOAD(self->page->step);
    if (step < 0 || step >= self->prog->nops) {
        PyErr_SetString(PyExc_RuntimeError, "action report names no step");
        return NULL;
    }
    PyObject *exc = PyObject_CallFunction(
        self->prog->make_error, "iOi", ACT_LOAD(self->page->err),
        PyTuple_GET_ITEM(self->prog->labels, step), step);
    if (exc != NULL && !PyExceptionInstance_Check(exc)) {
        PyErr_Format(PyExc_TypeError,
                     "the action's make_error returned %.100s, not an "
                     "exception",
                     Py_TYPE(exc)->tp_name);
        Py_DECREF(exc);
        return NULL;
    }
    return exc;
}

static PyObject *
run_cancel(RunObject *self, PyObject *arg)
{
    int sig = pyclone_as_int(arg);
    if (sig == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (sig <= 0 || sig > 64) {
        PyErr_SetString(PyExc_ValueError, "cancel(signum) needs a signal number");
        return NULL;
    }
    if (self->page != NULL) {
        int expected = 0;
        __atomic_compare_exchange_n(&self->page->cancel, &expected, sig, 0,
                                    __ATOMIC_RELEASE, __ATOMIC_RELAXED);
        pyclone_act_sys(SYS_futex, (long)&self->page->cancel, FUTEX_WAKE, 1, 0,
                        0, 0);
    }
    Py_RETURN_NONE;
}

static PyObject *
run_release(RunObject *self, PyObject *Py_UNUSED(arg))
{
    if (pyclone_run_finish(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
run_get_finished(RunObject *self, void *Py_UNUSED(closure))
{
    /* For CLONE_VM tasks: the kernel cleared the tid word (exit or exec). */
    return PyBool_FromLong(self->page == NULL ||
                           ACT_LOAD(self->page->tid) == 0);
}

static PyMethodDef run_methods[] = {
    {"join", (PyCFunction)(void (*)(void))run_join, METH_FASTCALL,
     "join(timeout=None) -> bool: wait (GIL released) until the kernel "
     "cleared\nthe task's tid word (CLONE_VM tasks: exit or exec)."},
    {"collect", (PyCFunction)run_collect, METH_NOARGS,
     "collect() -> (returncode, error, released): join() without a "
     "timeout,\nthe returncode the report gives, what error() returns, "
     "and whether\nthe run was released too (not when the program has an "
     "on_end:\nrelease() runs it)."},
    {"outcome", (PyCFunction)run_outcome, METH_NOARGS,
     "outcome() -> (state, exit_code, step, errno) as the child reported."},
    {"error", (PyCFunction)pyclone_run_error, METH_NOARGS,
     "error() -> the exception for a failed step, or None."},
    {"cancel", (PyCFunction)run_cancel, METH_O,
     "cancel(signum): ask the action to stop at its next step or sleep."},
    {"release", (PyCFunction)run_release, METH_NOARGS,
     "release(): give back the stack and report page (deferred while a "
     "CLONE_VM\ntask may still use them)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef run_getset[] = {
    {"finished", (getter)run_get_finished, NULL,
     "True once a CLONE_VM task left its stack", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject pyclone_Run_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pyclone._pyclone._action_run",
    .tp_basicsize = sizeof(RunObject),
    .tp_dealloc = (destructor)run_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The stack and report page of one task running an action.",
    .tp_methods = run_methods,
    .tp_getset = run_getset,
};
