/* The C test program: for every ISA level this build has and this CPU supports, each
 * kernel family compares its dispatched kernel with the portable scalar one and checks
 * that bad arguments are refused. Built under AddressSanitizer + UBSan by
 * `make -C csrc asan`. Prints "N passed, M failed"; exits non-zero on any failure. */
#include <stdio.h>
#include <stdlib.h>

#include "pk_test.h"

long pk_test_passed, pk_test_failed;

void test_linear_csr(int level);
void test_linear_quant(int level);
void test_linear_bitwise(int level);
void test_conv_int8(int level);

/* One row per kernel family: its name and its test function, run at each ISA level. */
static const struct {
    const char *name;
    void (*run)(int level);
} FAMILIES[] = {
    {"linear_csr", test_linear_csr},
    {"linear_int8/int4", test_linear_quant},
    {"linear_binary/pow2", test_linear_bitwise},
    {"conv_int8", test_conv_int8},
};

/* The dispatch table itself: names, caps and every slot filled at every level. */
static void test_dispatch(int level) {
    CHECK(pk_set_isa_cap(level) == level, "cap %d not honoured", level);
    CHECK(pk_isa_level() == level, "level %d reported as %d", level, pk_isa_level());
    for (int i = 0; i < pk_kernel_count(); i++) {
        const char *impl = pk_kernel_impl(i);
        CHECK(impl != NULL, "slot %s has no kernel at level %s", pk_kernel_slot(i),
              pk_isa_name(level));
    }
    CHECK(pk_kernel_slot(pk_kernel_count()) == NULL, "slot past the end is not NULL");
    CHECK(pk_isa_name(pk_isa_count()) == NULL, "ISA name past the end is not NULL");
    CHECK(pk_isa_name(-1) == NULL, "ISA name -1 is not NULL");
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
    pk_set_isa_cap(best);
    printf("%ld passed, %ld failed\n", pk_test_passed, pk_test_failed);
    return pk_test_failed ? 1 : 0;
}
