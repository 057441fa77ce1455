/* The dispatch table. One table per ISA level this build has and this CPU supports,
 * each built once from the kernel list (kernels.inc) -- every slot's portable kernel
 * first, then each level up to its own -- and never changed after. Choosing a level
 * (PYINFER_ISA at load, pk_set_isa_cap later) publishes one of them with a single atomic
 * store, so a call running meanwhile keeps the whole table it read. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pk_internal.h"

const struct pk_functable *pk_published_table;
static struct pk_functable tables[PK_ISA_COUNT]; /* by level; only supported levels built */
static pthread_once_t tables_built = PTHREAD_ONCE_INIT;

#define PK_SLOT(slot, params) #slot,
static const char *const slot_names[] = {
#include "kernels.inc"
};

/* Every slot of *t with the best kernel at or below level `cap`. */
static void fill(struct pk_functable *t, int cap) {
    memset(t, 0, sizeof *t);
    t->level = cap;
    for (int level = PK_ISA_SCALAR; level <= cap; level++) {
#define PK_KERNEL(slot, isa, features, fn)                       \
    if (PK_ISA_##isa == level && pk_cpu_has(features)) {         \
        t->slot = fn;                                            \
        t->slot##_impl = #fn;                                    \
    }
#include "kernels.inc"
    }
}

static void build_tables(void) {
    for (int level = PK_ISA_SCALAR; level < PK_ISA_COUNT; level++)
        if (pk_isa_supported(level)) fill(&tables[level], level);
}

/* The table of the best supported level at or below `cap`. */
static const struct pk_functable *table_for(int cap) {
    pthread_once(&tables_built, build_tables);
    int best = PK_ISA_SCALAR;
    for (int level = PK_ISA_SCALAR + 1; level < PK_ISA_COUNT && level <= cap; level++)
        if (pk_isa_supported(level)) best = level;
    return &tables[best];
}

int pk_set_isa_cap(int level) {
    const struct pk_functable *t = table_for(level);
    __atomic_store_n(&pk_published_table, t, __ATOMIC_RELEASE);
    return t->level;
}

static int level_from_env(void) {
    const char *cap = getenv("PYINFER_ISA");
    if (cap == NULL || *cap == '\0') return PK_ISA_COUNT - 1;
    for (int l = 0; l < PK_ISA_COUNT; l++)
        if (strcmp(cap, pk_isa_name(l)) == 0) return l;
    return PK_ISA_COUNT - 1; /* unknown names are reported by the Python side */
}

/* The first table: PYINFER_ISA's, unless pk_set_isa_cap() has published one already. */
static void publish_first(void) {
    const struct pk_functable *none = NULL, *t = table_for(level_from_env());
    __atomic_compare_exchange_n(&pk_published_table, &none, t, 0, __ATOMIC_ACQ_REL,
                                __ATOMIC_ACQUIRE);
}

const struct pk_functable *pk_dispatch_init(void) {
    static pthread_once_t first = PTHREAD_ONCE_INIT;
    pthread_once(&first, publish_first);
    return __atomic_load_n(&pk_published_table, __ATOMIC_ACQUIRE);
}

__attribute__((constructor)) static void pk_load(void) { pk_dispatch_init(); }

int pk_isa_level(void) { return pk_kernels()->level; }

int pk_kernel_count(void) { return (int)(sizeof slot_names / sizeof slot_names[0]); }

const char *pk_kernel_slot(int i) {
    return i >= 0 && i < pk_kernel_count() ? slot_names[i] : NULL;
}

int pk_kernel_index(const char *slot) {
    for (int i = 0; slot && i < pk_kernel_count(); i++)
        if (strcmp(slot, slot_names[i]) == 0) return i;
    return -1;
}

const char *pk_kernel_impl(int i) {
    const struct pk_functable *t = pk_kernels();
#define PK_SLOT(slot, params) \
    if (i-- == 0) return t->slot##_impl;
#include "kernels.inc"
    return NULL;
}
