/* 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3)
 * (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks").
 *
 * The output is cut into 2x2 tiles; tile (ty, tx) reads the 4x4 input
 * window at (2ty, 2tx) of the padded plane. With d that window and g a
 * 3x3 kernel,
 *     y (2x2) = A^T [ (G g G^T) .* (B^T d B) ] A,
 * 16 multiplies per tile and channel pair where the direct sum takes 36.
 * The 16 positions xi = (a, b) of the 4x4 transformed tile become 16
 * independent matrix products over the channels, done by sgemm:
 *     M[xi] (OC, T) = U[xi] (OC, C) * V[xi] (C, T),
 * with U the transformed kernels, V the transformed input tiles and T the
 * number of tiles of a group of images: several images go through each
 * sgemm call together (GROUP_TILES), so that a small map (16 tiles at 7x7)
 * still makes products wide enough for the kernels, and the transformed
 * kernels U are read once per group rather than per image.
 *
 * The backward pass is the exact adjoint of that forward: with
 * dM = A dY A^T per tile,
 *     dU[xi] (OC, C) += dM[xi] (OC, T) * V[xi]^T,  dw = G^T dU G,
 *     dV[xi] (C, T)   = U[xi]^T (C, OC) * dM[xi],   dx = B dV B^T,
 * the last one added into the overlapping input windows. So the gradient
 * is the gradient of exactly the function the forward computes; both
 * agree with the direct convolution up to float rounding (the transforms
 * only add, subtract and halve).
 *
 * The transforms are vectorized across tiles (DEFT_HOT clones them for
 * AVX2), see gather_windows. A stage-1 image of preresnet20 (16 channels,
 * 14x14 tiles) is a group of its own and keeps V and M in L2. */
#include "nn/layers.h"

#include <cblas.h>
#include <string.h>

#define NXI 16 /* positions of a transformed 4x4 tile */

/* The elementwise passes work on 8 tiles at once in GCC's generic vectors
 * (AVX in the x86-64-v3 clones); the last n < 8 go through the same code
 * with partial loads and stores. n is a constant 8 in the main loops, so
 * those compile to single vector moves. */
typedef float v8f __attribute__((vector_size(32)));
#define INLINE static inline __attribute__((always_inline))

/* dst[0..n) = src[0..n), n <= 8 floats, as a move of constant size (a
 * memcpy of variable size would be a library call per row tail). */
INLINE void copy_upto8(void *dst, const void *src, int n)
{
    switch (n) {
    case 8: memcpy(dst, src, 8 * sizeof(float)); break;
    case 7: memcpy(dst, src, 7 * sizeof(float)); break;
    case 6: memcpy(dst, src, 6 * sizeof(float)); break;
    case 5: memcpy(dst, src, 5 * sizeof(float)); break;
    case 4: memcpy(dst, src, 4 * sizeof(float)); break;
    case 3: memcpy(dst, src, 3 * sizeof(float)); break;
    case 2: memcpy(dst, src, 2 * sizeof(float)); break;
    case 1: memcpy(dst, src, 1 * sizeof(float)); break;
    default: break;
    }
}

/* (macros, not functions: a vector argument or result would change the
 * ABI between the clones) */
#define LOAD8(v, p) memcpy(&(v), (p), sizeof(v8f))
#define STORE8(p, v) memcpy((p), &(v), sizeof(v8f))
#define LD(v, p, n)                                                            \
    do {                                                                       \
        (v) = (v8f){0};                                                        \
        copy_upto8(&(v), (p), (n));                                            \
    } while (0)
#define ST(p, v, n)                                                            \
    do {                                                                       \
        const v8f st_ = (v);                                                   \
        copy_upto8((p), &st_, (n));                                            \
    } while (0)

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v8i __attribute__((vector_size(32)));
/* Two-vector shuffles with constant indices: __builtin_shufflevector is
 * both GCC's (12 and later) and clang's (the fuzz build). */
#define EVENS(a, b) __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14)
#define ODDS(a, b) __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15)
#define ZIP_LO(a, b) __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11)
#define ZIP_HI(a, b) __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15)

/* The windows of a row of tiles start at every other column, and a row
 * holds only 4 to 14 tiles here: too short for vectors. So the planes are
 * first taken apart into their even and odd columns in one long vector
 * pass over all their rows (unzip_planes; rows have even length), after
 * which every window row is a contiguous run of tw floats in one of them
 * (copy_run, add_run); zip_planes puts them back together. */

/* e[f] = src[2f], o[f] = src[2f + 1] for f < n. */
INLINE void unzip_planes(float *e, float *o, const float *src, size_t n)
{
    size_t f = 0;
    for (; f + 8 <= n; f += 8) {
        v8f lo, hi;
        LOAD8(lo, src + 2 * f);
        LOAD8(hi, src + 2 * f + 8);
        const v8f ve = EVENS(lo, hi);
        const v8f vo = ODDS(lo, hi);
        STORE8(e + f, ve);
        STORE8(o + f, vo);
    }
    for (; f < n; f++)
        e[f] = src[2 * f], o[f] = src[2 * f + 1];
}

/* dst[2f] = act(e[f] + bias), dst[2f + 1] = act(o[f] + bias) for f < n,
 * act ReLU (v < 0 ? 0 : v, which keeps a NaN) or nothing. */
INLINE void zip_planes(float *dst, const float *e, const float *o, size_t n,
                       float bias, int relu)
{
    size_t f = 0;
    const v8f zero = {0};
    for (; f + 8 <= n; f += 8) {
        v8f ve, vo;
        LOAD8(ve, e + f);
        LOAD8(vo, o + f);
        ve += bias, vo += bias;
        v8f lo = ZIP_LO(ve, vo);
        v8f hi = ZIP_HI(ve, vo);
        if (relu) {
            lo = (v8f)((v8i)lo & ~(lo < zero));
            hi = (v8f)((v8i)hi & ~(hi < zero));
        }
        STORE8(dst + 2 * f, lo);
        STORE8(dst + 2 * f + 8, hi);
    }
    for (; f < n; f++) {
        float r0 = e[f] + bias, r1 = o[f] + bias;
        if (relu)
            r0 = r0 < 0.0f ? 0.0f : r0, r1 = r1 < 0.0f ? 0.0f : r1;
        dst[2 * f] = r0, dst[2 * f + 1] = r1;
    }
}

/* dst[0..n) = src[0..n): vectors of 8 or 4, the last one overlapping the
 * one before (harmless for a copy); scalar when n < 4. */
INLINE void copy_run(float *dst, const float *src, int n)
{
    if (n >= 8) {
        v8f v;
        for (int i = 0;; i += 8) {
            i = i > n - 8 ? n - 8 : i;
            LOAD8(v, src + i);
            STORE8(dst + i, v);
            if (i == n - 8)
                return;
        }
    }
    if (n >= 4) {
        v4f a, b;
        memcpy(&a, src, sizeof a);
        memcpy(&b, src + n - 4, sizeof b);
        memcpy(dst, &a, sizeof a);
        memcpy(dst + n - 4, &b, sizeof b);
        return;
    }
    for (int i = 0; i < n; i++)
        dst[i] = src[i];
}

/* dst[0..n) += src[0..n): vectors of 8, then of 4, then scalars. */
INLINE void add_run(float *dst, const float *src, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        v8f a, b;
        LOAD8(a, dst + i);
        LOAD8(b, src + i);
        a += b;
        STORE8(dst + i, a);
    }
    if (i + 4 <= n) {
        v4f a, b;
        memcpy(&a, dst + i, sizeof a);
        memcpy(&b, src + i, sizeof b);
        a += b;
        memcpy(dst + i, &a, sizeof a);
        i += 4;
    }
    for (; i < n; i++)
        dst[i] += src[i];
}

/* Calls f(j, 8) over [0, count) in steps of 8, then f(j, rest). */
#define FOR_LANES(count, f)                                                    \
    do {                                                                       \
        size_t j_ = 0;                                                         \
        for (; j_ + 8 <= (count); j_ += 8)                                     \
            f(j_, 8);                                                          \
        if (j_ < (count))                                                      \
            f(j_, (int)((count) - j_));                                        \
    } while (0)

typedef struct {
    int th, tw;   /* tile rows and columns: ceil(OH / 2), ceil(OW / 2)       */
    int t;        /* tiles per image, th * tw                                */
    int hq, wq;   /* the padded plane the tiles read: 2 th + 2, 2 tw + 2      */
    int gmax;     /* images per group at most (group_size)                   */
    int n;        /* images in the group at hand, <= gmax                    */
    size_t N;     /* its tiles, n t: the columns of every V, M, D row         */
} tiling_t;

/* Images per sgemm call: enough that a product has GROUP_TILES columns or
 * more, at most GROUP_MAX images. 64 was chosen from 1, 64 and 192,
 * timing every conv of preresnet20 and vgg11bn at batch 128
 * (bench_convs): against one image a call, the 7x7 convs ran about 10%
 * faster, and the 256-channel 3x3 conv (4 tiles an image, which now takes
 * conv2d.c's small-output path instead) 72 -> 55 ms forward + backward;
 * a 28x28 image (196 tiles) stays a group of its own, in L2; 192 was no
 * faster anywhere. */
#define GROUP_TILES 64
#define GROUP_MAX 64

static tiling_t tiling(const deft_conv2d_shape_t *s)
{
    tiling_t g;
    g.th = (s->oh + 1) / 2, g.tw = (s->ow + 1) / 2;
    g.t = g.th * g.tw;
    g.hq = 2 * g.th + 2, g.wq = 2 * g.tw + 2;
    g.gmax = (GROUP_TILES + g.t - 1) / g.t;
    g.gmax = g.gmax > GROUP_MAX ? GROUP_MAX : g.gmax;
    g.n = g.gmax, g.N = (size_t)g.n * g.t;
    return g;
}

int deft_conv2d_winograd_group(const deft_conv2d_shape_t *s)
{
    return tiling(s).gmax;
}

/* g for the n images from some image on: n <= g->gmax. */
static void set_group(tiling_t *g, int n)
{
    g->n = n, g->N = (size_t)n * g->t;
}

/* Every model conv with 3x3 kernels and stride 1 past the first layer
 * (C >= 4; the first layers of 1-3 channels go to the direct kernel), on
 * maps of at least 2x2: a 1x1 output fills a quarter of its one tile, 16
 * multiplies where im2col takes 9. */
int deft_conv2d_winograd_ok(const deft_conv2d_shape_t *s)
{
    return s->k == 3 && s->stride == 1 && s->c >= 4 && s->oh >= 2 &&
           s->ow >= 2;
}

/* The scratch carve-up, for a group of G = gmax images and N = G t tiles
 * (the column of a tile in V, M and D is (image, ty, tx)):
 *   P   (G, C, hq, wq)   padded input; in the backward, its gradient
 *   V   (16, C, N)       transformed input tiles; their gradient
 *   M   (16, OC, N)      transformed output tiles; their gradient
 *   U   (16, OC, C)      transformed kernels
 *   dU  (16, OC, C)      their gradient
 *   Y   (G, OC, 2th, 2tw)  output (or its gradient) with whole tiles, when
 *                        OH or OW is odd
 *   D   (16, max(C, OC), N)  the transforms' gathered windows
 *   Z   G max(C hq wq, 4 OC t)  the even and odd columns of P or Y */
typedef struct {
    float *P, *V, *M, *U, *dU, *Y, *D, *Z;
} wscratch_t;

size_t deft_conv2d_winograd_floats(const deft_conv2d_shape_t *s)
{
    const tiling_t g = tiling(s);
    const size_t C = (size_t)s->c, OC = (size_t)s->oc, T = g.N,
                 G = (size_t)g.gmax;
    return G * C * g.hq * g.wq + NXI * (C * T + OC * T + 2 * OC * C) +
           OC * 4 * T + NXI * (C > OC ? C : OC) * T +
           (G * C * g.hq * g.wq > OC * 4 * T ? G * C * g.hq * g.wq
                                             : OC * 4 * T);
}

static wscratch_t wcarve(float *base, const deft_conv2d_shape_t *s,
                         const tiling_t *g)
{
    const size_t C = (size_t)s->c, OC = (size_t)s->oc, T = g->N;
    wscratch_t w;
    w.P = base;
    w.V = w.P + (size_t)g->gmax * C * g->hq * g->wq;
    w.M = w.V + NXI * C * T;
    w.U = w.M + NXI * OC * T;
    w.dU = w.U + NXI * OC * C;
    w.Y = w.dU + NXI * OC * C;
    w.D = w.Y + OC * 4 * T;
    w.Z = w.D + NXI * (C > OC ? C : OC) * T;
    return w;
}


/* Kernels per block of the kernel transforms: U[xi] rows lie OC C floats
 * apart (256 KB for 256 x 256 channels), so the 16 of one kernel share
 * cache sets; a block of KBLOCK kernels is transformed into t first and
 * written as 16 runs of KBLOCK floats, whole cache lines. */
#define KBLOCK 16

/* t[xi][j] = (G g G^T)[xi] for the kernels g = k + 9 j, j < n. */
DEFT_HOT static void kernel_block(float t[NXI][KBLOCK], const float *k, int n)
{
    for (int j = 0; j < n; j++, k += 9) {
        float r[4][3];  // r = G k
        for (int v = 0; v < 3; v++) {
            r[0][v] = k[v];
            r[1][v] = 0.5f * (k[v] + k[3 + v] + k[6 + v]);
            r[2][v] = 0.5f * (k[v] - k[3 + v] + k[6 + v]);
            r[3][v] = k[6 + v];
        }
        for (int a = 0; a < 4; a++) {
            t[a * 4 + 0][j] = r[a][0];
            t[a * 4 + 1][j] = 0.5f * (r[a][0] + r[a][1] + r[a][2]);
            t[a * 4 + 2][j] = 0.5f * (r[a][0] - r[a][1] + r[a][2]);
            t[a * 4 + 3][j] = r[a][2];
        }
    }
}

/* U[xi] (OC, C) = G g G^T for every kernel g = w[o][c] (3, 3). */
static void kernel_transform(float *U, const float *w, int OC, int C)
{
    const size_t occ = (size_t)OC * C;
    float t[NXI][KBLOCK];
    for (size_t j0 = 0; j0 < occ; j0 += KBLOCK) {
        const int n = occ - j0 < KBLOCK ? (int)(occ - j0) : KBLOCK;
        kernel_block(t, w + j0 * 9, n);
        for (int x = 0; x < NXI; x++)
            memcpy(U + x * occ + j0, t[x], (size_t)n * sizeof(float));
    }
}

/* k + 9 j = G^T t[.][j] G for j < n: the adjoint of kernel_block. */
DEFT_HOT static void kernel_block_adjoint(float *k, float t[NXI][KBLOCK],
                                          int n)
{
    for (int j = 0; j < n; j++, k += 9) {
        float r[4][3];  // r = dU G
        for (int a = 0; a < 4; a++) {
            const float u0 = t[a * 4 + 0][j], u1 = t[a * 4 + 1][j];
            const float u2 = t[a * 4 + 2][j], u3 = t[a * 4 + 3][j];
            r[a][0] = u0 + 0.5f * (u1 + u2);
            r[a][1] = 0.5f * (u1 - u2);
            r[a][2] = 0.5f * (u1 + u2) + u3;
        }
        for (int v = 0; v < 3; v++) {
            k[v] = r[0][v] + 0.5f * (r[1][v] + r[2][v]);
            k[3 + v] = 0.5f * (r[1][v] - r[2][v]);
            k[6 + v] = 0.5f * (r[1][v] + r[2][v]) + r[3][v];
        }
    }
}

/* dw (OC, C, 3, 3) = G^T dU[.][o][c] G: the adjoint of kernel_transform. */
static void kernel_adjoint(float *dw, const float *dU, int OC, int C)
{
    const size_t occ = (size_t)OC * C;
    float t[NXI][KBLOCK];
    for (size_t j0 = 0; j0 < occ; j0 += KBLOCK) {
        const int n = occ - j0 < KBLOCK ? (int)(occ - j0) : KBLOCK;
        for (int x = 0; x < NXI; x++)
            memcpy(t[x], dU + x * occ + j0, (size_t)n * sizeof(float));
        kernel_block_adjoint(dw + j0 * 9, t, n);
    }
}

/* Runs call(n) with n = tw, a compile-time constant for the row lengths
 * of preresnet20's three stages (14, 7 and 4 tiles), so that the runs of
 * copy_run and add_run compile to straight moves. */
#define BY_TW(tw, call)                                                        \
    do {                                                                       \
        switch (tw) {                                                          \
        case 14: call(14); break;                                              \
        case 7: call(7); break;                                                \
        case 4: call(4); break;                                                \
        default: call(tw); break;                                              \
        }                                                                      \
    } while (0)

/* Each transform is a gather (or scatter) between the planes and D, whose
 * rows hold one value of every tile window (D[xi][j] for the flat tile
 * index j = (c, ty, tx)), and an elementwise pass over j. Z holds the
 * planes' even and odd columns (see unzip_planes). */

/* D[(a, b)] (C, N) = E or O (n, C, hq, tw + 1) at
 * [i][c][2ty + a][tx + b / 2], column (i, ty, tx). */
INLINE void gather_rows(float *restrict D, const float *E, const float *O,
                        int C, const tiling_t *g, const int tw)
{
    const size_t ct = (size_t)C * g->N;
    for (int i = 0; i < g->n; i++)
    for (int c = 0; c < C; c++)
        for (int ty = 0; ty < g->th; ty++)
            for (int a = 0; a < 4; a++) {
                const size_t r =
                    (((size_t)i * C + c) * g->hq + 2 * ty + a) * (tw + 1);
                float *d = D + (size_t)a * 4 * ct + (size_t)c * g->N +
                           (size_t)i * g->t + (size_t)ty * tw;
                copy_run(d, E + r, tw);               // columns 2tx
                copy_run(d + ct, O + r, tw);          // 2tx + 1
                copy_run(d + 2 * ct, E + r + 1, tw);  // 2tx + 2
                copy_run(d + 3 * ct, O + r + 1, tw);  // 2tx + 3
            }
}

/* D[(a, b)] (C, N) = the window entries (a, b): P[i][c][2ty + a][2tx + b]. */
DEFT_HOT static void gather_windows(float *restrict D, const float *restrict P,
                                    float *restrict Z, int C,
                                    const tiling_t *g)
{
    const int tw = g->tw, hw = tw + 1;  // hw: a row's even (odd) columns
    const size_t half = (size_t)g->n * C * g->hq * hw;
    float *E = Z, *O = Z + half;        // E, O (n, C, hq, hw)
    unzip_planes(E, O, P, half);
#define ROWS(n) gather_rows(D, E, O, C, g, n)
    BY_TW(tw, ROWS);
#undef ROWS
}

/* V[.][j..j+n) = B^T d B of the windows D[.][j..j+n). */
INLINE void input_tx8(float *V, const float *D, size_t ct, size_t j, int n)
{
    v8f u[4][4];  // u = B^T d: the columns first
    for (int b = 0; b < 4; b++) {
        v8f d[4];  // column b
        LD(d[0], D + (0 + b) * ct + j, n);
        LD(d[1], D + (4 + b) * ct + j, n);
        LD(d[2], D + (8 + b) * ct + j, n);
        LD(d[3], D + (12 + b) * ct + j, n);
        u[0][b] = d[0] - d[2], u[1][b] = d[1] + d[2];
        u[2][b] = d[2] - d[1], u[3][b] = d[1] - d[3];
    }
    for (int a = 0; a < 4; a++) {
        ST(V + (a * 4 + 0) * ct + j, u[a][0] - u[a][2], n);
        ST(V + (a * 4 + 1) * ct + j, u[a][1] + u[a][2], n);
        ST(V + (a * 4 + 2) * ct + j, u[a][2] - u[a][1], n);
        ST(V + (a * 4 + 3) * ct + j, u[a][1] - u[a][3], n);
    }
}

/* V[xi] (C, N) = B^T d B for every tile window d of P (n, C, hq, wq); D, Z
 * scratch. */
DEFT_HOT static void input_transform(float *restrict V, const float *P,
                                     float *restrict D, float *restrict Z,
                                     int C, const tiling_t *g)
{
    const size_t ct = (size_t)C * g->N;
    gather_windows(D, P, Z, C, g);
#define INPUT_TX(j, n) input_tx8(V, D, ct, j, n)
    FOR_LANES(ct, INPUT_TX);
#undef INPUT_TX
}

/* D[.][j..j+n) = B dV B^T of the tiles dV[.][j..j+n). */
INLINE void input_adj8(float *D, const float *dV, size_t ct, size_t j, int n)
{
    v8f e[4][4];  // e = dV B^T: the rows first
    for (int a = 0; a < 4; a++) {
        v8f v[4];  // row a
        LD(v[0], dV + (a * 4 + 0) * ct + j, n);
        LD(v[1], dV + (a * 4 + 1) * ct + j, n);
        LD(v[2], dV + (a * 4 + 2) * ct + j, n);
        LD(v[3], dV + (a * 4 + 3) * ct + j, n);
        e[a][0] = v[0], e[a][1] = v[1] - v[2] + v[3];
        e[a][2] = v[1] + v[2] - v[0], e[a][3] = -v[3];
    }
    for (int b = 0; b < 4; b++) {
        ST(D + (0 + b) * ct + j, e[0][b], n);
        ST(D + (4 + b) * ct + j, e[1][b] - e[2][b] + e[3][b], n);
        ST(D + (8 + b) * ct + j, e[1][b] + e[2][b] - e[0][b], n);
        ST(D + (12 + b) * ct + j, -e[3][b], n);
    }
}

/* E or O (n, C, hq, tw + 1) at [i][c][2ty + a][tx + b / 2] +=
 * D[(a, b)] (C, N): the adjoint of gather_rows. */
INLINE void scatter_rows(float *E, float *O, const float *restrict D, int C,
                         const tiling_t *g, const int tw)
{
    const size_t ct = (size_t)C * g->N;
    for (int i = 0; i < g->n; i++)
    for (int c = 0; c < C; c++)
        for (int ty = 0; ty < g->th; ty++)
            for (int a = 0; a < 4; a++) {
                const size_t r =
                    (((size_t)i * C + c) * g->hq + 2 * ty + a) * (tw + 1);
                const float *d = D + (size_t)a * 4 * ct + (size_t)c * g->N +
                                 (size_t)i * g->t + (size_t)ty * tw;
                add_run(E + r, d, tw);
                add_run(O + r, d + ct, tw);
                add_run(E + r + 1, d + 2 * ct, tw);
                add_run(O + r + 1, d + 3 * ct, tw);
            }
}

/* dP (n, C, hq, wq) = the sum over tiles of B dV B^T placed at each tile's
 * window: the adjoint of input_transform. D, Z are scratch. The windows
 * overlap by two rows and columns; the window rows are added into the
 * even and odd columns one run at a time. */
DEFT_HOT static void input_adjoint(float *restrict dP, const float *restrict dV,
                                   float *restrict D, float *restrict Z, int C,
                                   const tiling_t *g)
{
    const size_t ct = (size_t)C * g->N;
    const int tw = g->tw, hw = tw + 1;
    const size_t half = (size_t)g->n * C * g->hq * hw;
    float *E = Z, *O = Z + half;  // E, O (n, C, hq, hw)
#define INPUT_ADJ(j, n) input_adj8(D, dV, ct, j, n)
    FOR_LANES(ct, INPUT_ADJ);
#undef INPUT_ADJ
    memset(Z, 0, 2 * half * sizeof(float));
#define ROWS(n) scatter_rows(E, O, D, C, g, n)
    BY_TW(tw, ROWS);
#undef ROWS
    zip_planes(dP, E, O, half, 0.0f, 0);
}

/* D[(i, j)][k..k+n) = (A^T M A)(i, j) of the tiles M[.][k..k+n). */
INLINE void output_tx8(float *D, const float *M, size_t ot, size_t k, int n)
{
    v8f z[2][4];  // z = A^T M: the columns first
    for (int c = 0; c < 4; c++) {
        v8f m[4];  // column c
        LD(m[0], M + (0 + c) * ot + k, n);
        LD(m[1], M + (4 + c) * ot + k, n);
        LD(m[2], M + (8 + c) * ot + k, n);
        LD(m[3], M + (12 + c) * ot + k, n);
        z[0][c] = m[0] + m[1] + m[2], z[1][c] = m[1] - m[2] - m[3];
    }
    for (int i = 0; i < 2; i++) {
        ST(D + (2 * i) * ot + k, z[i][0] + z[i][1] + z[i][2], n);
        ST(D + (2 * i + 1) * ot + k, z[i][1] - z[i][2] - z[i][3], n);
    }
}

/* Between D[(i, j)] (OC, N), output (i, j) of every tile, and the even
 * (j = 0) and odd (j = 1) columns E, O (n, OC, 2th, tw) of the output
 * planes: D to E, O if to_planes, else back. */
INLINE void tile_rows(float *E, float *O, float *D, int OC, const tiling_t *g,
                      int to_planes, const int tw)
{
    const size_t ot = (size_t)OC * g->N;
    for (int im = 0; im < g->n; im++)
    for (int o = 0; o < OC; o++)
        for (int ty = 0; ty < g->th; ty++)
            for (int i = 0; i < 2; i++) {
                const size_t r =
                    (((size_t)im * OC + o) * 2 * g->th + 2 * ty + i) * tw;
                float *d = D + (size_t)2 * i * ot + (size_t)o * g->N +
                           (size_t)im * g->t + (size_t)ty * tw;
                if (to_planes) {
                    copy_run(E + r, d, tw);
                    copy_run(O + r, d + ot, tw);
                } else {
                    copy_run(d, E + r, tw);
                    copy_run(d + ot, O + r, tw);
                }
            }
}

/* Y (n, OC, 2th, 2tw) = A^T M A per tile, + b[o], then ReLU if asked. D
 * is scratch: D[(i, j)] (OC, N) holds output (i, j) of every tile. */
DEFT_HOT static void output_transform(float *restrict Y,
                                      const float *restrict M,
                                      float *restrict D, float *restrict Z,
                                      const float *b, int OC,
                                      const tiling_t *g, int relu)
{
    const size_t ot = (size_t)OC * g->N, T = (size_t)g->t;
    const int tw = g->tw;
    float *E = Z, *O = Z + 2 * ot;  // E, O (n, OC, 2th, tw)
#define OUTPUT_TX(j, n) output_tx8(D, M, ot, j, n)
    FOR_LANES(ot, OUTPUT_TX);
#undef OUTPUT_TX
#define ROWS(n) tile_rows(E, O, D, OC, g, 1, n)
    BY_TW(tw, ROWS);
#undef ROWS
    for (int im = 0; im < g->n; im++)
        for (int o = 0; o < OC; o++) {
            const size_t q = (size_t)im * OC + o;  // the plane (im, o)
            zip_planes(Y + q * 4 * T, E + q * 2 * T, O + q * 2 * T, 2 * T,
                       b ? b[o] : 0.0f, relu);
        }
}

/* dM[.][k..k+n) = A dY A^T of the tiles' gradients D[.][k..k+n). */
INLINE void output_adj8(float *dM, const float *D, size_t ot, size_t k, int n)
{
    v8f h[2][4];  // h = dY A^T: the rows first
    for (int i = 0; i < 2; i++) {
        v8f y0, y1;
        LD(y0, D + (2 * i) * ot + k, n);
        LD(y1, D + (2 * i + 1) * ot + k, n);
        h[i][0] = y0, h[i][1] = y0 + y1, h[i][2] = y0 - y1, h[i][3] = -y1;
    }
    for (int c = 0; c < 4; c++) {
        ST(dM + (0 + c) * ot + k, h[0][c], n);
        ST(dM + (4 + c) * ot + k, h[0][c] + h[1][c], n);
        ST(dM + (8 + c) * ot + k, h[0][c] - h[1][c], n);
        ST(dM + (12 + c) * ot + k, -h[1][c], n);
    }
}

/* dM[xi] (OC, N) = A dY A^T per tile: the adjoint of output_transform
 * (without its bias and ReLU). dY is (n, OC, 2th, 2tw); D is scratch. */
DEFT_HOT static void output_adjoint(float *restrict dM, const float *restrict dY,
                                    float *restrict D, float *restrict Z,
                                    int OC, const tiling_t *g)
{
    const size_t ot = (size_t)OC * g->N;
    const int tw = g->tw;
    float *E = Z, *O = Z + 2 * ot;  // E, O (n, OC, 2th, tw)
    unzip_planes(E, O, dY, 2 * ot);
#define ROWS(n) tile_rows(E, O, D, OC, g, 0, n)
    BY_TW(tw, ROWS);
#undef ROWS
#define OUTPUT_ADJ(j, n) output_adj8(dM, D, ot, j, n)
    FOR_LANES(ot, OUTPUT_ADJ);
#undef OUTPUT_ADJ
}


/* M[x] (OC, N) = U[x] (OC, C) V[x] (C, N) for the 16 positions x. */
static void products(float *M, const float *U, const float *V, int OC, int C,
                     size_t N)
{
    for (int x = 0; x < NXI; x++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, (int)N, C,
                    1.0f, U + (size_t)x * OC * C, C, V + (size_t)x * C * N,
                    (int)N, 0.0f, M + (size_t)x * OC * N, (int)N);
}

void deft_conv2d_winograd_forward(float *out, const float *inp, const float *w,
                                  const float *b, int B,
                                  const deft_conv2d_shape_t *s, float *scratch,
                                  int relu)
{
    tiling_t g = tiling(s);
    const int C = s->c, OC = s->oc, P = s->oh * s->ow;
    const int whole = s->oh == 2 * g.th && s->ow == 2 * g.tw;
    const wscratch_t t = wcarve(scratch, s, &g);
    kernel_transform(t.U, w, OC, C);
    for (int i = 0; i < B; i += g.gmax) {
        set_group(&g, B - i < g.gmax ? B - i : g.gmax);
        float *o = out + (size_t)i * OC * P;  // o (n, OC, OH, OW)
        deft_nn_pad_planes(t.P, inp + (size_t)i * C * s->h * s->w, g.n * C,
                           s->h, s->w, g.hq, g.wq, s->pad);
        input_transform(t.V, t.P, t.D, t.Z, C, &g);
        products(t.M, t.U, t.V, OC, C, g.N);
        output_transform(whole ? o : t.Y, t.M, t.D, t.Z, b, OC, &g, relu);
        if (!whole)
            deft_nn_crop_planes(o, t.Y, g.n * OC, s->oh, s->ow, 2 * g.th,
                                2 * g.tw, 0);
    }
}

/* The backward of one group of g->n images from dout's d and inp's x on:
 * dU += dM V^T; dx = the input adjoint of U^T dM unless dx is NULL. */
static void backward_group(float *dx, const float *d, const float *x,
                           const deft_conv2d_shape_t *s, const tiling_t *g,
                           const wscratch_t *t)
{
    const int C = s->c, OC = s->oc, N = (int)g->N;
    if (s->oh != 2 * g->th || s->ow != 2 * g->tw) {
        // the partial tiles' extra row or column is zero
        deft_nn_pad_planes(t->Y, d, g->n * OC, s->oh, s->ow, 2 * g->th,
                           2 * g->tw, 0);
        d = t->Y;
    }
    output_adjoint(t->M, d, t->D, t->Z, OC, g);
    deft_nn_pad_planes(t->P, x, g->n * C, s->h, s->w, g->hq, g->wq, s->pad);
    input_transform(t->V, t->P, t->D, t->Z, C, g);
    for (int k = 0; k < NXI; k++)  // dU[k] (OC, C) += dM[k] V[k]^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, C, N, 1.0f,
                    t->M + (size_t)k * OC * N, N, t->V + (size_t)k * C * N, N,
                    1.0f, t->dU + (size_t)k * OC * C, C);
    if (!dx)
        return;
    for (int k = 0; k < NXI; k++)  // dV[k] (C, N) = U[k]^T dM[k]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, N, OC, 1.0f,
                    t->U + (size_t)k * OC * C, C, t->M + (size_t)k * OC * N, N,
                    0.0f, t->V + (size_t)k * C * N, N);
    input_adjoint(t->P, t->V, t->D, t->Z, C, g);
    deft_nn_crop_planes(dx, t->P, g->n * C, s->h, s->w, g->hq, g->wq, s->pad);
}

void deft_conv2d_winograd_backward(float *dinp, float *dw, float *db,
                                   const float *dout, const float *inp,
                                   const float *w, int B,
                                   const deft_conv2d_shape_t *s, float *scratch)
{
    tiling_t g = tiling(s);
    const int C = s->c, OC = s->oc, P = s->oh * s->ow;
    const size_t in_size = (size_t)C * s->h * s->w;
    const wscratch_t t = wcarve(scratch, s, &g);
    kernel_transform(t.U, w, OC, C);
    memset(t.dU, 0, (size_t)NXI * OC * C * sizeof(float));
    if (db)
        deft_conv2d_bias_grad(db, dout, B, OC, P);
    for (int i = 0; i < B; i += g.gmax) {
        set_group(&g, B - i < g.gmax ? B - i : g.gmax);
        backward_group(dinp ? dinp + i * in_size : NULL,
                       dout + (size_t)i * OC * P, inp + i * in_size, s, &g,
                       &t);
    }
    kernel_adjoint(dw, t.dU, OC, C);
}
