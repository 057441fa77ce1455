/* Body of the depthwise conv2d kernel (in/groups == 1), included by depthwise_dense_scalar.c
 * and depthwise_dense_avx2.c. Each output plane o reads input plane o / (out_channels /
 * channels) through a zero-padded window copied once per plane. The including file
 * defines, before the #include, PK_DW_NAME (the function name) and
 *
 *   dw_row(win, wp, wo, kh, kw, stride_h, stride_w, dil_h, dil_w, bv, activation, oh,
 *          out_w, yo)
 *       output row oh of one plane: yo[oh * out_w + ow] = act(sum over taps of
 *       wo[ky * kw + kx] * win[(oh * stride_h + ky * dil_h) * wp + ow * stride_w +
 *       kx * dil_w] + bv), the sum in tap order (the same bits in every ISA). */
#ifndef PK_DW_NAME
#error "define PK_DW_NAME and dw_row before including depthwise_dense_body.h"
#endif

struct depthwise_args {
    const float *x;
    const float *w;
    const float *bias;
    float *y;
    float *wins;
    int64_t channels, height, width, out_channels, kh, kw, stride_h, stride_w, dil_h, dil_w;
    int64_t pad_top, pad_left, out_h, out_w, hp, wp, mult, win_floats;
    int activation;
};

/* Output planes pl0..pl1, each through its padded input window. */
static void planes_part(void *ctx, int64_t pl0, int64_t pl1, int worker) {
    const struct depthwise_args *a = ctx;
    float *win = a->wins + worker * a->win_floats;
    for (int64_t pl = pl0; pl < pl1; pl++) {
        const int64_t n = pl / a->out_channels, o = pl % a->out_channels;
        pk_conv_window(a->x + (n * a->channels + o / a->mult) * a->height * a->width,
                       a->height, a->width, a->pad_top, a->pad_left, a->hp, a->wp, win);
        const float *wo = a->w + o * a->kh * a->kw;
        const float bv = a->bias ? a->bias[o] : 0.0f;
        float *yo = a->y + pl * a->out_h * a->out_w;
        for (int64_t oh = 0; oh < a->out_h; oh++)
            dw_row(win, a->wp, wo, a->kh, a->kw, a->stride_h, a->stride_w, a->dil_h, a->dil_w,
                   bv, a->activation, oh, a->out_w, yo);
    }
}

int PK_DW_NAME(const float *x, int64_t images, int64_t channels, int64_t height,
               int64_t width, const float *w, int64_t out_channels, int64_t kh, int64_t kw,
               int64_t stride_h, int64_t stride_w, int64_t dil_h, int64_t dil_w,
               int64_t pad_top, int64_t pad_left, int64_t out_h, int64_t out_w,
               const float *bias, int activation, float *y) {
    const int64_t hp = (out_h - 1) * stride_h + (kh - 1) * dil_h + 1;
    const int64_t wp = (out_w - 1) * stride_w + (kw - 1) * dil_w + 1;
    const int64_t mult = out_channels / channels, planes = images * out_channels;
    const int threads = pk_conv_threads((double)planes * out_h * out_w * kh * kw);
    const int64_t win_floats = (hp * wp + 15) / 16 * 16; /* one padded window per worker */
    float *wins = pk_aligned_alloc((size_t)(threads * win_floats) * sizeof(float));
    if (!wins) return PK_ERR_NOMEM;
    struct depthwise_args args = {
        .x = x, .w = w, .bias = bias, .y = y, .wins = wins, .channels = channels,
        .height = height, .width = width, .out_channels = out_channels, .kh = kh, .kw = kw,
        .stride_h = stride_h, .stride_w = stride_w, .dil_h = dil_h, .dil_w = dil_w,
        .pad_top = pad_top, .pad_left = pad_left, .out_h = out_h, .out_w = out_w, .hp = hp,
        .wp = wp, .mult = mult, .win_floats = win_floats, .activation = activation};
    pk_parallel_for(threads, planes, 1, planes_part, &args);
    pk_aligned_free(wins);
    return PK_OK;
}
