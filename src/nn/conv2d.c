/* 2-D convolution, zero padding, one image at a time.
 *
 * Every path first copies the image into a zero-padded plane set pin
 * (C, Hp, Wp), so that no inner loop tests bounds, and reads it in 8-float
 * vectors (pin has 8 floats of slack at its end for the over-reads).
 *
 * A stride S > 1 (a downsampling conv) takes the im2col + sgemm paths,
 * with the strided gather and its adjoint; a NULL bias is no bias. A 3x3
 * stride-1 conv of 4 or more channels (the bulk of preresnet20 and
 * vgg11bn) goes to Winograd's F(2x2, 3x3) in conv2d_winograd.c instead,
 * forward and dense backward: 16 multiplies per output tile where these
 * paths take 36.
 *
 * Forward: im2col of the padded image into col (K, P), K = C*k*k,
 * P = OH*OW, then o (OC, P) = w (OC, K) * col (K, P) with sgemm. Working one
 * image at a time keeps col in L2 (it is k*k times the image); batching it
 * over the minibatch was measured slower. When K is tiny (a first layer:
 * 25 for lenet's 5x5 on one channel) sgemm runs at a third of its speed on
 * these shapes, so a direct kernel with the outputs in registers does the
 * same sums instead.
 *
 * Backward, dense: the adjoint through the same col, with two sgemms.
 *
 * Backward, sparse: for a conv followed by ReLU and a 2x2 max-pool the
 * output gradient is nonzero at most once per pool window (and the ReLU
 * zeroes about half of those). Each nonzero g at output (oy, ox) adds
 * g * window(oy, ox) to dw and g * w to the input window; with k <= 8 a
 * window row is one 8-float vector, so this is k vector FMAs per channel
 * and nonzero, with no im2col at all: a quarter or less of the dense
 * backward's arithmetic. */
#include "nn/layers.h"

#include <cblas.h>
#include <string.h>

/* 8 floats in GCC's generic vectors: AVX in the x86-64-v3 clones of the
 * DEFT_HOT functions, two SSE registers in the baseline ones. Loads and
 * stores go through memcpy, which compiles to one unaligned move. */
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
/* Kernels parameterized by constants must be inlined into each clone to
 * be specialized (and vectorized for the clone's target). */
#define INLINE static inline __attribute__((always_inline))
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(v8f))
#define STORE8(p, v) memcpy((p), &(v), sizeof(v8f))
#define VLANES 8

/* Direct forward when K = C*k*k is at most this and rows are a vector wide */
#define DIRECT_MAX_K 32

int deft_conv2d_shape(deft_conv2d_shape_t *s, int c, int h, int w, int oc,
                      int k, int pad, int stride)
{
    s->c = c, s->h = h, s->w = w, s->oc = oc, s->k = k, s->pad = pad;
    s->stride = stride;
    if (stride < 1 || h + 2 * pad < k || w + 2 * pad < k) {
        s->oh = s->ow = 0;
        return 0;
    }
    s->oh = (h + 2 * pad - k) / stride + 1;
    s->ow = (w + 2 * pad - k) / stride + 1;
    return 1;
}

int deft_nn_vector_kernels(void)
{
#if defined(__AVX2__)
    return 1;
#elif DEFT_HAVE_CLONES
    return __builtin_cpu_supports("x86-64-v3") != 0;
#else
    return 0;
#endif
}

int deft_conv2d_sparse_ok(const deft_conv2d_shape_t *s)
{
    return s->k <= VLANES && s->stride == 1 && deft_nn_vector_kernels();
}

/* The scratch carve-up, shared by all paths (each uses a part):
 *   pin   (C, Hp, Wp) + 8     padded input
 *   dpin  (C, Hp, Wp) + 8     padded input gradient
 *   col   (K, G P)            im2col of a group of G images (one, or
 *                             several for a small output)
 *   dcol  (K, G P)            its gradient
 *   yb    (OC, G P)           the group's output (or its gradient), image
 *                             columns side by side
 *   w8    (OC, C, k, 8)       kernel rows padded to 8 lanes (sparse)
 *   gz    (OC, Q <= P)        each channel's nonzero gradients (sparse)
 *   off   (OC, Q <= P) int32  and their window offsets in pin
 *   pmap  (P) int32           output position -> offset in pin
 *   cnt   (OC) int32          nonzeros per channel */
typedef struct {
    float *pin, *dpin, *col, *dcol, *yb, *w8, *gz;
    int32_t *off, *pmap, *cnt;
} scratch_t;

/* A small output (SMALL_P pixels or fewer: vgg11bn's 3x3 and 1x1 maps)
 * goes through im2col with several images per sgemm call, SMALL_COLS
 * columns or more: one image would make narrow products that read all
 * the weights per image. Winograd loses there too: a 3x3 map fills 9 of
 * its 4 tiles' 16 outputs, and bench_convs timed the 256-channel 3x3 conv
 * at 1.86x the multiply-adds of its direct sum done as one sgemm. */
#define SMALL_P 16
#define SMALL_COLS 128

/* 1 if s's output is small (see SMALL_P). */
static int small_output(const deft_conv2d_shape_t *s)
{
    return s->oh * s->ow <= SMALL_P;
}

/* Images per sgemm call of the im2col path: one, or for a small output
 * enough for SMALL_COLS columns. */
static int im2col_group(const deft_conv2d_shape_t *s)
{
    const int P = s->oh * s->ow;
    return small_output(s) ? (SMALL_COLS + P - 1) / P : 1;
}

/* Columns of col: a group's. */
static size_t col_columns(const deft_conv2d_shape_t *s)
{
    return (size_t)im2col_group(s) * s->oh * s->ow;
}

int deft_conv2d_uses_winograd(const deft_conv2d_shape_t *s)
{
    return !small_output(s) && deft_conv2d_winograd_ok(s);
}

static size_t padded_floats(const deft_conv2d_shape_t *s)
{
    return (size_t)s->c * (s->h + 2 * s->pad) * (s->w + 2 * s->pad) + VLANES;
}

size_t deft_conv2d_scratch_floats(const deft_conv2d_shape_t *s)
{
    const size_t K = (size_t)s->c * s->k * s->k, P = (size_t)s->oh * s->ow;
    const size_t w8 = (size_t)s->oc * s->c * s->k * VLANES;
    const size_t n = 2 * padded_floats(s) + 2 * K * col_columns(s) +
                     (size_t)s->oc * col_columns(s) + w8 +
                     2 * (size_t)s->oc * P + P + (size_t)s->oc;
    if (!deft_conv2d_winograd_ok(s))
        return n;
    const size_t wn = deft_conv2d_winograd_floats(s);
    return wn > n ? wn : n;
}

static scratch_t carve(float *base, const deft_conv2d_shape_t *s)
{
    const size_t K = (size_t)s->c * s->k * s->k, P = (size_t)s->oh * s->ow;
    scratch_t t;
    t.pin = base;
    t.dpin = t.pin + padded_floats(s);
    t.col = t.dpin + padded_floats(s);
    t.dcol = t.col + K * col_columns(s);
    t.yb = t.dcol + K * col_columns(s);
    t.w8 = t.yb + (size_t)s->oc * col_columns(s);
    t.gz = t.w8 + (size_t)s->oc * s->c * s->k * VLANES;
    t.off = (int32_t *)(t.gz + (size_t)s->oc * P);
    t.pmap = t.off + (size_t)s->oc * P;
    t.cnt = t.pmap + P;
    return t;
}

void deft_nn_pad_planes(float *dst, const float *src, int n, int h, int w,
                        int dh, int dw, int off)
{
    if (dh == h && dw == w) {
        memcpy(dst, src, (size_t)n * h * w * sizeof(float));
        return;
    }
    memset(dst, 0, (size_t)n * dh * dw * sizeof(float));
    for (int p = 0; p < n; p++)
        for (int y = 0; y < h; y++)
            memcpy(dst + ((size_t)p * dh + y + off) * dw + off,
                   src + ((size_t)p * h + y) * w, (size_t)w * sizeof(float));
}

void deft_nn_crop_planes(float *dst, const float *src, int n, int h, int w,
                         int sh, int sw, int off)
{
    if (sh == h && sw == w) {
        memcpy(dst, src, (size_t)n * h * w * sizeof(float));
        return;
    }
    for (int p = 0; p < n; p++)
        for (int y = 0; y < h; y++)
            memcpy(dst + ((size_t)p * h + y) * w,
                   src + ((size_t)p * sh + y + off) * sw + off,
                   (size_t)w * sizeof(float));
}

void deft_conv2d_bias_grad(float *db, const float *dout, int B, int OC,
                           int P)
{
    memset(db, 0, (size_t)OC * sizeof(float));
    for (int i = 0; i < B; i++)
        for (int o = 0; o < OC; o++) {
            const float *row = dout + ((size_t)i * OC + o) * P;
            float acc = 0.0f;
            for (int p = 0; p < P; p++)
                acc += row[p];
            db[o] += acc;
        }
}

/* pin (C, Hp, Wp) = in (C, H, W) with pad zeros around each plane. The
 * border is rewritten every time: pin is shared with other layers. */
static void pad_input(float *pin, const float *in, const deft_conv2d_shape_t *s)
{
    const int Hp = s->h + 2 * s->pad, Wp = s->w + 2 * s->pad;
    // the slack read past the last plane is zeroed too: another layer may
    // have left anything there
    memset(pin + (size_t)s->c * Hp * Wp, 0, VLANES * sizeof(float));
    deft_nn_pad_planes(pin, in, s->c, s->h, s->w, Hp, Wp, s->pad);
}

/* din (C, H, W) = the interior of dpin (C, Hp, Wp). */
static void crop_input(float *din, const float *dpin,
                       const deft_conv2d_shape_t *s)
{
    deft_nn_crop_planes(din, dpin, s->c, s->h, s->w, s->h + 2 * s->pad,
                        s->w + 2 * s->pad, s->pad);
}

/* dst[0..n) = src[0..n) in 8-float moves, the last one overlapping the
 * previous (harmless for a copy); scalar when n < 8. */
INLINE void copy_run(float *dst, const float *src, int n)
{
    if (n < VLANES) {
        for (int i = 0; i < n; i++)
            dst[i] = src[i];
        return;
    }
    v8f v;
    int i = 0;
    for (; i + VLANES <= n; i += VLANES) {
        LOAD8(v, src + i);
        STORE8(dst + i, v);
    }
    if (i < n) {
        LOAD8(v, src + n - VLANES);
        STORE8(dst + n - VLANES, v);
    }
}

/* col (K, P), rows ld floats apart: col[(c, ky, kx)][(oy, ox)] =
 * pin[c][S*oy+ky][S*ox+kx], S the stride. */
DEFT_HOT static void im2col(float *col, size_t ld, const float *pin,
                            const deft_conv2d_shape_t *s)
{
    const int k = s->k, OH = s->oh, OW = s->ow, S = s->stride;
    const int Hp = s->h + 2 * s->pad, Wp = s->w + 2 * s->pad;
    size_t row = 0;
    for (int c = 0; c < s->c; c++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++, row++) {
                float *dst = col + row * ld;
                const float *src = pin + ((size_t)c * Hp + ky) * Wp + kx;
                if (S == 1) {
                    for (int oy = 0; oy < OH; oy++, dst += OW, src += Wp)
                        copy_run(dst, src, OW);
                    continue;
                }
                for (int oy = 0; oy < OH; oy++, dst += OW, src += S * Wp)
                    for (int ox = 0; ox < OW; ox++)
                        dst[ox] = src[S * ox];
            }
}

/* The adjoint of im2col: dpin (C, Hp, Wp), zero on entry, gets every
 * entry of dcol (K, P), rows ld floats apart, added back where im2col read
 * it. */
DEFT_HOT static void col2im(float *dpin, const float *dcol, size_t ld,
                            const deft_conv2d_shape_t *s)
{
    const int k = s->k, OH = s->oh, OW = s->ow, S = s->stride;
    const int Hp = s->h + 2 * s->pad, Wp = s->w + 2 * s->pad;
    size_t row = 0;
    for (int c = 0; c < s->c; c++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++, row++) {
                const float *src = dcol + row * ld;
                float *dst = dpin + ((size_t)c * Hp + ky) * Wp + kx;
                for (int oy = 0; oy < OH; oy++, src += OW, dst += S * Wp)
                    for (int ox = 0; ox < OW; ox++)
                        dst[S * ox] += src[ox];
            }
}

/* out (OC, P) += bias per row, then ReLU if asked: one pass while the
 * sgemm result is still in cache. */
DEFT_HOT static void bias_act(float *out, const float *b, int OC, int P,
                              int relu)
{
    for (int o = 0; o < OC; o++) {
        float *row = out + (size_t)o * P;
        const float bo = b ? b[o] : 0.0f;
        if (relu) {
            for (int p = 0; p < P; p++) {
                float v = row[p] + bo;
                row[p] = v < 0.0f ? 0.0f : v;  // NaN stays NaN
            }
        } else {
            for (int p = 0; p < P; p++)
                row[p] += bo;
        }
    }
}

/* ---- direct forward ------------------------------------------------------- */

/* NO output channels from o0, NX vectors of outputs along a row starting at
 * (oy, ox): the NO*NX accumulators stay in registers while all K taps
 * stream through. NO and NX are compile-time constants at every call. */
INLINE void direct_block(float *out, const float *pin, const float *w,
                         const float *b, const deft_conv2d_shape_t *s, int o0,
                         int oy, const int *xs, const int NO, const int NX,
                         int relu)
{
    const int k = s->k, Hp = s->h + 2 * s->pad, Wp = s->w + 2 * s->pad;
    const int K = s->c * k * k, P = s->oh * s->ow;
    const v8f zero = {0};
    v8f acc[6][2];
    for (int o = 0; o < NO; o++)
        for (int x = 0; x < NX; x++)
            acc[o][x] = zero + (b ? b[o0 + o] : 0.0f);
    const float *wo = w + (size_t)o0 * K;  // wo (NO, K)
    int t = 0;
    for (int c = 0; c < s->c; c++)
        for (int ky = 0; ky < k; ky++) {
            const float *row = pin + ((size_t)c * Hp + oy + ky) * Wp;
            for (int kx = 0; kx < k; kx++, t++) {
                v8f in[2];
                for (int x = 0; x < NX; x++)
                    LOAD8(in[x], row + xs[x] + kx);
                for (int o = 0; o < NO; o++) {
                    const float wt = wo[(size_t)o * K + t];
                    for (int x = 0; x < NX; x++)
                        acc[o][x] += wt * in[x];
                }
            }
        }
    for (int o = 0; o < NO; o++)
        for (int x = 0; x < NX; x++) {
            v8f v = acc[o][x];
            if (relu) {
                // v < 0 ? 0 : v, which keeps a NaN (as max(v, 0) may not)
                const v8i neg = v < zero;
                v = (v8f)((v8i)v & ~neg);
            }
            STORE8(out + (size_t)(o0 + o) * P + oy * s->ow + xs[x], v);
        }
}

/* out (OC, OH, OW) of one image straight from pin; needs OW >= 8. Rows are
 * covered by 8-wide vectors, the last one overlapping its neighbour when
 * 8 does not divide OW (the overlap is recomputed, not accumulated). */
DEFT_HOT static void direct_image(float *out, const float *pin,
                                  const float *w, const float *b,
                                  const deft_conv2d_shape_t *s, int relu)
{
    const int OW = s->ow, nvec = (OW + VLANES - 1) / VLANES;
    for (int oy = 0; oy < s->oh; oy++)
        for (int v = 0; v < nvec; v += 2) {
            int xs[2];
            xs[0] = v * VLANES < OW - VLANES ? v * VLANES : OW - VLANES;
            xs[1] = (v + 1) * VLANES < OW - VLANES ? (v + 1) * VLANES
                                                   : OW - VLANES;
            const int two = v + 1 < nvec;
            int o = 0;
            for (; o + 6 <= s->oc; o += 6) {
                if (two)
                    direct_block(out, pin, w, b, s, o, oy, xs, 6, 2, relu);
                else
                    direct_block(out, pin, w, b, s, o, oy, xs, 6, 1, relu);
            }
            for (; o < s->oc; o++) {
                if (two)
                    direct_block(out, pin, w, b, s, o, oy, xs, 1, 2, relu);
                else
                    direct_block(out, pin, w, b, s, o, oy, xs, 1, 1, relu);
            }
        }
}

/* col (K, n P): columns [i P, (i + 1) P) = image x0 + i's im2col. */
static void im2col_images(float *col, const float *x0, int n,
                          const deft_conv2d_shape_t *s, const scratch_t *t)
{
    const size_t P = (size_t)s->oh * s->ow;
    const size_t in_size = (size_t)s->c * s->h * s->w;
    for (int i = 0; i < n; i++) {
        pad_input(t->pin, x0 + i * in_size, s);
        im2col(col + i * P, (size_t)n * P, t->pin, s);
    }
}

/* dst (cols, rows, P) = src (rows, cols, P): blocks of P floats
 * transposed. A group's images (n, OC, P) become (OC, n P), the layout
 * of a product over the group, and back. */
static void swap_blocks(float *dst, const float *src, int rows, int cols,
                        int P)
{
    const size_t bytes = (size_t)P * sizeof(float);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            memcpy(dst + ((size_t)c * rows + r) * P,
                   src + ((size_t)r * cols + c) * P, bytes);
}

void deft_conv2d_forward(float *out, const float *inp, const float *w,
                         const float *b, int B, const deft_conv2d_shape_t *s,
                         float *scratch, int relu)
{
    const int K = s->c * s->k * s->k, P = s->oh * s->ow, OC = s->oc;
    const size_t in_size = (size_t)s->c * s->h * s->w;
    const scratch_t t = carve(scratch, s);
    if (K <= DIRECT_MAX_K && s->ow >= VLANES && s->stride == 1 &&
        deft_nn_vector_kernels()) {
        for (int i = 0; i < B; i++) {
            pad_input(t.pin, inp + i * in_size, s);  // pin (C, Hp, Wp)
            direct_image(out + (size_t)i * OC * P, t.pin, w, b, s, relu);
        }
        return;
    }
    if (deft_conv2d_uses_winograd(s)) {
        deft_conv2d_winograd_forward(out, inp, w, b, B, s, scratch, relu);
        return;
    }
    const int G = im2col_group(s);
    for (int i = 0; i < B; i += G) {
        const int n = B - i < G ? B - i : G, N = n * P;
        float *o = out + (size_t)i * OC * P;  // o (n, OC, P)
        float *y = n == 1 ? o : t.yb;         // y (OC, n P)
        im2col_images(t.col, inp + i * in_size, n, s, &t);
        // y (OC, n P) = w (OC, K) * col (K, n P)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, N, K, 1.0f,
                    w, K, t.col, N, 0.0f, y, N);
        if (n > 1)
            swap_blocks(o, t.yb, OC, n, P);
        for (int j = 0; j < n; j++)
            bias_act(o + (size_t)j * OC * P, b, OC, P, relu);
    }
}

/* ---- dense backward ------------------------------------------------------- */

void deft_conv2d_backward(float *dinp, float *dw, float *db, const float *dout,
                          const float *inp, const float *w, int B,
                          const deft_conv2d_shape_t *s, float *scratch)
{
    const int K = s->c * s->k * s->k, P = s->oh * s->ow, OC = s->oc;
    const size_t in_size = (size_t)s->c * s->h * s->w;
    if (deft_conv2d_uses_winograd(s)) {
        deft_conv2d_winograd_backward(dinp, dw, db, dout, inp, w, B, s,
                                      scratch);
        return;
    }
    const scratch_t t = carve(scratch, s);
    if (db)
        deft_conv2d_bias_grad(db, dout, B, OC, P);
    const int G = im2col_group(s);
    for (int i = 0; i < B; i += G) {
        const int n = B - i < G ? B - i : G, N = n * P;
        const float *d = dout + (size_t)i * OC * P;  // d (n, OC, P)
        if (n > 1) {                                  // d (OC, n P)
            swap_blocks(t.yb, d, n, OC, P);
            d = t.yb;
        }
        im2col_images(t.col, inp + i * in_size, n, s, &t);
        // dw (OC, K) (+)= d (OC, n P) * col^T (n P, K)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, K, N, 1.0f,
                    d, N, t.col, N, i ? 1.0f : 0.0f, dw, K);
        if (!dinp)
            continue;
        // dcol (K, n P) = w^T (K, OC) * d (OC, n P)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, OC, 1.0f, w,
                    K, d, N, 0.0f, t.dcol, N);
        for (int j = 0; j < n; j++) {
            memset(t.dpin, 0, padded_floats(s) * sizeof(float));
            col2im(t.dpin, t.dcol + (size_t)j * P, (size_t)N, s);
            crop_input(dinp + (i + j) * in_size, t.dpin, s);
        }
    }
}

/* ---- sparse backward ------------------------------------------------------ */

/* The input-gradient update reads and writes 8-float vectors of dpin at
 * windows that overlap their neighbours'. It runs over blocks of channels
 * per nonzero: at least IGRAD_MIN_RMW / k of them, so that a window's
 * stores have retired before the next, overlapping window loads them (a
 * partial overlap cannot be store-forwarded and stalls: 3x slower when
 * measured with one channel); and no more than fit IGRAD_L1_FLOATS, so
 * that the block's planes stay in L1 (1.25x faster on vgg's 64 channels
 * than all channels at once). */
#define IGRAD_MIN_RMW 24
#define IGRAD_L1_FLOATS 4096

/* One image: dw (OC, C, k, k) and db (OC) accumulate; dpin (C, Hp, Wp),
 * zero on entry, gets the input gradient unless it is NULL. k is a
 * compile-time constant at each call. */
INLINE void sparse_image_k(float *dw, float *db, float *dpin, const float *g,
                           const int32_t *idx, int q, const scratch_t *t,
                           const deft_conv2d_shape_t *s, const int k)
{
    const int C = s->c, OC = s->oc;
    const int Wp = s->w + 2 * s->pad;
    const size_t plane = (size_t)(s->h + 2 * s->pad) * Wp;
    for (int o = 0; o < OC; o++) {
        // the channel's nonzeros, compacted without branches
        const float *go = g + (size_t)o * q;       // go (Q)
        const int32_t *io = idx + (size_t)o * q;   // io (Q)
        float *gz = t->gz + (size_t)o * q;         // gz (n <= Q)
        int32_t *off = t->off + (size_t)o * q;     // off (n <= Q)
        int n = 0;
        v8f bacc = {0};
        int j = 0;
        for (; j + VLANES <= q; j += VLANES) {
            v8f v;
            LOAD8(v, go + j);
            bacc += v;
        }
        float bsum = 0.0f;
        for (; j < q; j++)
            bsum += go[j];
        for (int l = 0; l < VLANES; l++)
            bsum += bacc[l];
        if (db)
            db[o] += bsum;
        for (j = 0; j < q; j++) {
            gz[n] = go[j];
            off[n] = t->pmap[io[j]];
            n += go[j] != 0.0f;
        }
        t->cnt[o] = n;
        // dw[o][c] (k, k) += sum_n gz[n] * window_n (k, k), one k-row
        // vector accumulator per ky; lanes >= k hold junk, dropped
        float *dwo = dw + (size_t)o * C * k * k;
        for (int c = 0; c < C; c++) {
            const float *pc = t->pin + c * plane;
            v8f acc[VLANES] = {{0}};
            for (j = 0; j < n; j++) {
                const float *win = pc + off[j];
                for (int ky = 0; ky < k; ky++) {
                    v8f v;
                    LOAD8(v, win + ky * Wp);
                    acc[ky] += gz[j] * v;
                }
            }
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++)
                    dwo[(c * k + ky) * k + kx] += acc[ky][kx];
        }
    }
    if (!dpin)
        return;
    // window_n of dpin += gz[n] * w[o]; w8's lanes >= k are zero, so the
    // full-vector update leaves the neighbours unchanged
    int cb = (IGRAD_MIN_RMW + k - 1) / k;
    const int fit = (int)(IGRAD_L1_FLOATS / plane);
    cb = fit > cb ? fit : cb;
    for (int c0 = 0; c0 < C; c0 += cb) {
        const int c1 = c0 + cb < C ? c0 + cb : C;
        for (int o = 0; o < OC; o++) {
            const float *gz = t->gz + (size_t)o * q;
            const int32_t *off = t->off + (size_t)o * q;
            const float *w8o = t->w8 + (size_t)o * C * k * VLANES;
            for (int j = 0; j < t->cnt[o]; j++) {
                const float gj = gz[j];
                for (int c = c0; c < c1; c++) {
                    float *win = dpin + c * plane + off[j];
                    const float *wr = w8o + (size_t)c * k * VLANES;
                    for (int ky = 0; ky < k; ky++) {
                        v8f v, wv;
                        LOAD8(v, win + ky * Wp);
                        LOAD8(wv, wr + ky * VLANES);
                        v += gj * wv;
                        STORE8(win + ky * Wp, v);
                    }
                }
            }
        }
    }
}

DEFT_HOT static void sparse_image(float *dw, float *db, float *dpin,
                                  const float *g, const int32_t *idx, int q,
                                  const scratch_t *t,
                                  const deft_conv2d_shape_t *s)
{
    switch (s->k) {
    case 5:
        sparse_image_k(dw, db, dpin, g, idx, q, t, s, 5);
        break;
    case 3:
        sparse_image_k(dw, db, dpin, g, idx, q, t, s, 3);
        break;
    default:
        sparse_image_k(dw, db, dpin, g, idx, q, t, s, s->k);
        break;
    }
}

void deft_conv2d_backward_sparse(float *dinp, float *dw, float *db,
                                 const float *g, const int32_t *idx, int q,
                                 const float *inp, const float *w, int B,
                                 const deft_conv2d_shape_t *s, float *scratch)
{
    const int k = s->k, C = s->c, OC = s->oc;
    const int Wp = s->w + 2 * s->pad;
    const size_t in_size = (size_t)C * s->h * s->w;
    scratch_t t = carve(scratch, s);
    memset(dw, 0, (size_t)OC * C * k * k * sizeof(float));
    if (db)
        memset(db, 0, (size_t)OC * sizeof(float));
    // where output (oy, ox)'s window starts in a pin plane
    for (int oy = 0, p = 0; oy < s->oh; oy++)
        for (int ox = 0; ox < s->ow; ox++, p++)
            t.pmap[p] = oy * Wp + ox;
    if (dinp) {
        // w8 (OC, C, k, 8): each kernel row zero-padded to a vector
        memset(t.w8, 0, (size_t)OC * C * k * VLANES * sizeof(float));
        for (size_t r = 0; r < (size_t)OC * C * k; r++)
            memcpy(t.w8 + r * VLANES, w + r * k, (size_t)k * sizeof(float));
    }
    for (int i = 0; i < B; i++) {
        pad_input(t.pin, inp + i * in_size, s);
        if (dinp)
            memset(t.dpin, 0, padded_floats(s) * sizeof(float));
        sparse_image(dw, db, dinp ? t.dpin : NULL, g + (size_t)i * OC * q,
                     idx + (size_t)i * OC * q, q, &t, s);
        if (dinp)
            crop_input(dinp + i * in_size, t.dpin, s);
    }
}
