/* The C test program. For every ISA level this build has and this CPU supports, the
 * dispatch table is checked and each slot of the kernel list (kernels.inc) runs its
 * test_<slot>(level): from the first SIMD level on it compares the dispatched kernel
 * with the portable one; at the scalar level it checks the portable kernel against a
 * plain statement of the semantics, or only that bad arguments are refused. Then
 * test_isa_switch: the level changing under running kernels, test_pool: the thread
 * pool, and test_pool2d: max and average pooling. Built under AddressSanitizer + UBSan by `make -C csrc asan`. Prints "N passed,
 * M failed"; exits non-zero on any failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pk_test.h"

long pk_test_passed, pk_test_failed;

#define PK_SLOT(slot, params) void test_##slot(int level);
#include "kernels.inc"

/* One row per slot: its name and its test, run at each ISA level. */
static const struct {
    const char *name;
    void (*run)(int level);
} FAMILIES[] = {
#define PK_SLOT(slot, params) {#slot, test_##slot},
#include "kernels.inc"
};

/* The dispatch table itself: names, caps and every slot filled at every level. */
static void test_dispatch(int level) {
    CHECK(pk_set_isa_cap(level) == level, "cap %d not honoured", level);
    CHECK(pk_isa_level() == level, "level %d reported as %d", level, pk_isa_level());
    for (int i = 0; i < pk_kernel_count(); i++) {
        const char *impl = pk_kernel_impl(i);
        CHECK(impl != NULL, "slot %s has no kernel at level %s", pk_kernel_slot(i),
              pk_isa_name(level));
        CHECK(pk_kernel_index(pk_kernel_slot(i)) == i, "slot %s not found by name",
              pk_kernel_slot(i));
    }
    CHECK(pk_kernel_slot(pk_kernel_count()) == NULL, "slot past the end is not NULL");
    CHECK(pk_kernel_index("no_such_slot") == -1, "an unknown slot name has an index");
    CHECK(pk_kernel_index(NULL) == -1, "a NULL slot name has an index");
    CHECK(pk_isa_name(pk_isa_count()) == NULL, "ISA name past the end is not NULL");
    CHECK(pk_isa_name(-1) == NULL, "ISA name -1 is not NULL");
    if (level == 0) /* the scalar table holds only portable kernels */
        for (int i = 0; i < pk_kernel_count(); i++) {
            const char *impl = pk_kernel_impl(i);
            const size_t n = strlen(impl);
            CHECK(n > 7 && strcmp(impl + n - 7, "_scalar") == 0, "slot %s at scalar: %s",
                  pk_kernel_slot(i), impl);
        }
}

int main(void) {
    const int families = (int)(sizeof FAMILIES / sizeof FAMILIES[0]);
    int best = 0;
    for (int level = 0; level < pk_isa_count(); level++) {
        if (!pk_isa_supported(level)) {
            printf("skip %-12s (%s)\n", pk_isa_name(level),
                   pk_isa_compiled(level) ? "this CPU lacks it" : "not in this build");
            continue;
        }
        best = level;
        const long before = pk_test_failed;
        test_dispatch(level);
        for (int f = 0; f < families; f++) {
            pk_set_isa_cap(level);
            FAMILIES[f].run(level);
        }
        printf("%-12s %s\n", pk_isa_name(level), pk_test_failed == before ? "ok" : "FAILED");
    }
    const long before = pk_test_failed;
    test_isa_switch();
    printf("%-12s %s\n", "isa switch", pk_test_failed == before ? "ok" : "FAILED");
    pk_set_isa_cap(best);
    const long before_pool = pk_test_failed;
    test_pool();
    printf("%-12s %s\n", "pool", pk_test_failed == before_pool ? "ok" : "FAILED");
    const long before_pool2d = pk_test_failed;
    test_pool2d();
    printf("%-12s %s\n", "pool2d", pk_test_failed == before_pool2d ? "ok" : "FAILED");
    printf("%ld passed, %ld failed\n", pk_test_passed, pk_test_failed);
    return pk_test_failed ? 1 : 0;
}
