/*
 * trampoline_x86_64.c: the architecture-specific part of the actions
 * machine on x86_64: raw system calls that never touch errno (TLS), and the
 * clone/clone3 trampoline that starts the child on its own stack and ends
 * it with SYS_exit, so it never returns into the caller's frames.
 */
#include "actions.h"

#if defined(__x86_64__)

long
pyclone_act_sys(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8),
                       "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}

long __attribute__((noinline))
pyclone_act_clone_asm(long nr, long a1, long a2, long a3, long a4, long a5)
{
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    long ret;
    __asm__ volatile("syscall\n\t"
                     "testq %%rax, %%rax\n\t"
                     "jnz 1f\n\t"
                     "xorl %%ebp, %%ebp\n\t"
                     "popq %%rax\n\t"
                     "popq %%rdi\n\t"
                     "andq $-16, %%rsp\n\t"
                     "callq *%%rax\n\t"
                     "movl %%eax, %%edi\n\t"
                     "movl %[exit], %%eax\n\t"
                     "syscall\n\t"
                     "hlt\n\t"
                     "1:\n\t"
                     : "=a"(ret)
                     : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8),
                       [exit] "i"(SYS_exit)
                     : "rcx", "r11", "memory");
    return ret;
}

void
pyclone_act_copy(char *dst, const char *src, size_t n)
{
    __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

#endif /* __x86_64__ */
