/*
 * actions_child.c: the program an action's child runs, op by op:
 * async-signal-safe, raw system calls only (see actions.h), reporting its
 * progress and outcome in the shared page.
 */
#include "actions.h"

/* The kernel's struct sigaction, as rt_sigaction(2) takes it (glibc's
 * differs, and the child calls the kernel directly). */
struct ksigaction_ {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
    unsigned long spare[2];
};

/* Sleep until ts has passed or the parent sets page->cancel.  Returns 1
 * when cancelled, 0 otherwise. */
static int
act_sleep(struct act_page *pg, const struct timespec *ts)
{
    struct timespec end;
    pyclone_act_sys(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&end, 0, 0, 0, 0);
    end.tv_sec += ts->tv_sec;
    end.tv_nsec += ts->tv_nsec;
    if (end.tv_nsec >= 1000000000L) {
        end.tv_sec++;
        end.tv_nsec -= 1000000000L;
    }
    for (;;) {
        if (ACT_LOAD(pg->cancel) != 0) {
            return 1;
        }
        /* absolute CLOCK_MONOTONIC timeout */
        long r = pyclone_act_sys(SYS_futex, (long)&pg->cancel,
                                 FUTEX_WAIT_BITSET, 0, (long)&end, 0,
                                 (long)FUTEX_BITSET_MATCH_ANY);
        if (r == -ETIMEDOUT) {
            return ACT_LOAD(pg->cancel) != 0;
        }
    }
}

static long
act_exec(struct act_page *pg, const struct act_op *op)
{
    if (!pg->sighand) {
        /* No handler of the caller may run here once signals are
         * unblocked: set caught signals back to SIG_DFL (this child's
         * dispositions are a copy).  With CLONE_SIGHAND they are the
         * caller's and stay; execve resets them in the new image. */
        for (long sig = 1; sig <= 64; sig++) {
            struct ksigaction_ old = {0};
            if (sig == SIGKILL || sig == SIGSTOP ||
                pyclone_act_sys(SYS_rt_sigaction, sig, 0, (long)&old, 8, 0,
                                0) < 0) {
                continue;
            }
            if (old.handler != (void *)SIG_DFL &&
                old.handler != (void *)SIG_IGN) {
                struct ksigaction_ dfl = {0};
                pyclone_act_sys(SYS_rt_sigaction, sig, (long)&dfl, 0, 8, 0, 0);
            }
        }
    }
    ACT_STORE(pg->state, ACT_EXECING);
    pyclone_act_sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&pg->caller_mask, 0,
                    8, 0, 0);
    long r = pyclone_act_sys(SYS_execve, (long)op->path, (long)op->argv,
                             (long)(op->envp ? op->envp : pg->environ), 0, 0,
                             0);
    unsigned long all = ~0UL;
    pyclone_act_sys(SYS_rt_sigprocmask, SIG_SETMASK, (long)&all, 0, 8, 0, 0);
    return r;
}

int __attribute__((noinline, used))
pyclone_act_child(void *arg)
{
    struct act_page *pg = arg;
    ACT_STORE(pg->state, ACT_RUNNING);
    for (Py_ssize_t i = 0; i < pg->nops; i++) {
        const struct act_op *op = &pg->ops[i];
        long r = 0;
        int cancelled = ACT_LOAD(pg->cancel) != 0;
        if (!cancelled) {
            switch (op->code) {
            case OP_EXIT:
                ACT_STORE(pg->exit_code, (int)op->num);
                ACT_STORE(pg->state, ACT_EXITED);
                return (int)op->num;
            case OP_SLEEP:
                cancelled = act_sleep(pg, &op->ts);
                break;
            case OP_WRITE:
                pyclone_act_copy(op->dst, op->src, op->len);
                break;
            case OP_CHDIR:
                r = pyclone_act_sys(SYS_chdir, (long)op->path, 0, 0, 0, 0, 0);
                break;
            case OP_CLOSE:
                r = pyclone_act_sys(SYS_close, op->num, 0, 0, 0, 0, 0);
                if (r == -EINTR) {
                    r = 0; /* Linux has released the descriptor */
                }
                break;
            case OP_IGNORE_SIGNAL:
            case OP_DEFAULT_SIGNAL: {
                struct ksigaction_ act = {0};
                act.handler = op->code == OP_IGNORE_SIGNAL ? (void *)SIG_IGN
                                                           : (void *)SIG_DFL;
                r = pyclone_act_sys(SYS_rt_sigaction, op->num, (long)&act, 0,
                                    8, 0, 0);
                break;
            }
            case OP_EXEC:
                r = act_exec(pg, op);
                break;
            }
        }
        if (cancelled) {
            ACT_STORE(pg->exit_code, 128 + ACT_LOAD(pg->cancel));
            ACT_STORE(pg->state, ACT_CANCELLED);
            return 128 + pg->cancel;
        }
        if (r < 0) {
            ACT_STORE(pg->err, (int)-r);
            ACT_STORE(pg->step, (int)i);
            ACT_STORE(pg->exit_code, 127);
            ACT_STORE(pg->state, ACT_FAILED);
            return 127;
        }
    }
    ACT_STORE(pg->exit_code, 0);
    ACT_STORE(pg->state, ACT_EXITED);
    return 0;
}
