/*
 * trampoline_generic.c: the actions machine's system calls on
 * architectures without an assembly trampoline: syscall(), whose errno
 * write races with a concurrently running caller on the shared thread
 * pointer (documented), and a plain byte copy.  Children start through
 * glibc's clone() (actions.c).
 */
#include "actions.h"

#if !defined(__x86_64__)

long
pyclone_act_sys(long n, long a, long b, long c, long d, long e, long f)
{
    long r = syscall(n, a, b, c, d, e, f);
    return r == -1 ? -errno : r;
}

void
pyclone_act_copy(char *dst, const char *src, size_t n)
{
    volatile char *d = dst;
    for (size_t i = 0; i < n; i++) {
        d[i] = src[i];
    }
}

#endif /* !__x86_64__ */
