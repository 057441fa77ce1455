/* Softmax and LayerNorm over the last axis, portable C, row by row. Special values come
 * out as the NumPy ops give them: a row holding NaN or +Inf, or only -Inf, is all NaN
 * (its max minus itself is NaN); a LayerNorm row holding NaN or Inf is all NaN. */
#include <math.h>

#include "ops/eltwise_scalar.h"
#include "pk_internal.h"

int pk_softmax_scalar(const float *x, int64_t rows, int64_t cols, float *y) {
    for (int64_t r = 0; r < rows; r++, x += cols, y += cols) {
        float m = -INFINITY;
        for (int64_t i = 0; i < cols; i++) /* NaN wins, as in np.max */
            if (x[i] > m || isnan(x[i])) m = x[i];
        float sum = 0.0f;
        for (int64_t i = 0; i < cols; i++) {
            y[i] = pk_exp_scalar(x[i] - m, 0.0f);
            sum += y[i];
        }
        const float inv = 1.0f / sum;
        for (int64_t i = 0; i < cols; i++) y[i] *= inv;
    }
    return PK_OK;
}

int pk_layer_norm_scalar(const float *x, int64_t rows, int64_t cols, const float *scale,
                         const float *bias, float eps, float *y) {
    for (int64_t r = 0; r < rows; r++, x += cols, y += cols) {
        double s = 0.0;
        for (int64_t i = 0; i < cols; i++) s += x[i];
        const float mean = (float)(s / (double)cols);
        double s2 = 0.0;
        for (int64_t i = 0; i < cols; i++) {
            const float d = x[i] - mean;
            s2 += (double)(d * d);
        }
        const float var = (float)(s2 / (double)cols);
        const float rstd = 1.0f / sqrtf(var + eps);
        for (int64_t i = 0; i < cols; i++) {
            float v = (x[i] - mean) * rstd;
            if (scale) v *= scale[i];
            if (bias) v += bias[i];
            y[i] = v;
        }
    }
    return PK_OK;
}
