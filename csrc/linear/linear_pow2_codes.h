/* The pow2 code format, shared by the pow2 kernels: two 4-bit codes per byte, column 2j
 * in the low nibble and 2j + 1 in the high one; code 0 is zero, else bit 3 is the sign and
 * bits 0..2 the field f = e + 1 of the value +-2^-e. */
#ifndef PK_LINEAR_POW2_CODES_H
#define PK_LINEAR_POW2_CODES_H

#include <stdint.h>

/* Value of each code for alpha = 1: 0, then 2^-(f-1) for fields f = 1..7, negated
 * when bit 3 is set; code 8 is rejected before any kernel runs. */
static const float pow2_values[16] = {
    0.0f, 1.0f,  0.5f,  0.25f,  0.125f,  0.0625f,  0.03125f,  0.015625f,
    0.0f, -1.0f, -0.5f, -0.25f, -0.125f, -0.0625f, -0.03125f, -0.015625f,
};

/* The code of column k of a row. */
static inline int code_at(const uint8_t *row, int64_t k) {
    const uint8_t byte = row[k >> 1];
    return (k & 1) ? byte >> 4 : byte & 15;
}

#endif /* PK_LINEAR_POW2_CODES_H */
