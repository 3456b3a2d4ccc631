/*
 * actions_mem.c: the memory an action's child runs on: mmap'd stacks with
 * a guard page and MAP_SHARED report pages, cached for reuse, and the list
 * of those a shared-VM child may still be using after its owner let go
 * (freed only once the kernel cleared the child's tid word).
 */
#include "actions.h"

static void *act_stack_cache[ACT_CACHE];
static int act_stack_cached;
static struct act_page *act_page_cache[ACT_CACHE];
static int act_page_cached;

/* A stack of `size` usable bytes above a PROT_NONE guard page; returns
 * the mapping's base (the guard page) or NULL with errno set. */
char *
pyclone_act_stack_get(size_t size)
{
    if (size == ACT_DEFAULT_STACK && act_stack_cached > 0) {
        return act_stack_cache[--act_stack_cached];
    }
    char *p = mmap(NULL, size + ACT_GUARD, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (p == MAP_FAILED) {
        return NULL;
    }
    if (mprotect(p, ACT_GUARD, PROT_NONE) < 0) {
        int e = errno;
        munmap(p, size + ACT_GUARD);
        errno = e;
        return NULL;
    }
    return p;
}

void
pyclone_act_stack_put(char *base, size_t size)
{
    if (base == NULL) {
        return;
    }
    if (size == ACT_DEFAULT_STACK && act_stack_cached < ACT_CACHE) {
        act_stack_cache[act_stack_cached++] = base;
        return;
    }
    munmap(base, size + ACT_GUARD);
}

struct act_page *
pyclone_act_page_get(void)
{
    struct act_page *pg;
    if (act_page_cached > 0) {
        pg = act_page_cache[--act_page_cached];
    }
    else {
        pg = mmap(NULL, ACT_PAGE, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (pg == MAP_FAILED) {
            return NULL;
        }
    }
    memset(pg, 0, sizeof(*pg));
    return pg;
}

/* `reusable`: no task can still write to the page. */
void
pyclone_act_page_put(struct act_page *pg, int reusable)
{
    if (pg == NULL) {
        return;
    }
    if (reusable && act_page_cached < ACT_CACHE) {
        act_page_cache[act_page_cached++] = pg;
        return;
    }
    munmap(pg, ACT_PAGE);
}

/* Shared-VM children whose owner let go before they ended: their stack,
 * page and program stay until the kernel clears the tid word. */
struct act_pending {
    struct act_page *page;
    char *stack;
    size_t stack_size;
    PyObject *keep; /* the program (holds the buffers the child writes) */
};
static struct act_pending *act_pending;
static Py_ssize_t act_npending, act_pending_cap;

void
pyclone_act_reclaim(void)
{
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < act_npending; i++) {
        struct act_pending *p = &act_pending[i];
        if (ACT_LOAD(p->page->tid) == 0) {
            pyclone_act_stack_put(p->stack, p->stack_size);
            pyclone_act_page_put(p->page, 1);
            Py_XDECREF(p->keep);
        }
        else {
            act_pending[j++] = *p;
        }
    }
    act_npending = j;
}

/* Keep (page, stack, keep) until the child leaves; on allocation failure
 * leak them rather than free memory a task may still use. */
void
pyclone_act_defer(struct act_page *pg, char *stack, size_t size, PyObject *keep)
{
    if (act_npending == act_pending_cap) {
        Py_ssize_t cap = act_pending_cap ? act_pending_cap * 2 : 16;
        void *grown = PyMem_RawRealloc(act_pending, cap * sizeof(*act_pending));
        if (grown == NULL) {
            return;
        }
        act_pending = grown;
        act_pending_cap = cap;
    }
    act_pending[act_npending].page = pg;
    act_pending[act_npending].stack = stack;
    act_pending[act_npending].stack_size = size;
    act_pending[act_npending].keep = Py_XNewRef(keep);
    act_npending++;
}
