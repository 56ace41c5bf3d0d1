/* Layer kernels of src/nn: plain functions over caller-owned buffers, with
 * every shape spelled out (llm.c style). Nothing here but the deft_dnnl_*
 * objects allocates, spawns a thread or checks arguments: the model
 * (model.c) validates and sizes all buffers at create time, and the tests
 * call these directly for gradient checks. Backward functions overwrite
 * their weight/bias gradients.
 *
 * Internal header: library sources and the project's own tests only. */
#ifndef DEFT_NN_LAYERS_H
#define DEFT_NN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* Hot loops are compiled twice, for baseline x86-64 and for x86-64-v3
 * (AVX2), and picked at load time, so that the default build (no
 * -march=native) still runs 8-wide on the machines we benchmark on. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 11 && !defined(DEFT_NO_CLONES)
#define DEFT_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#define DEFT_HAVE_CLONES 1
#else
#define DEFT_HOT
#define DEFT_HAVE_CLONES 0
#endif

/* 1 when the 8-float vector kernels (direct conv forward, sparse conv
 * backward) run as AVX2 code here: built for it, or cloned for it and the
 * CPU has it. Otherwise those kernels are correct but several times slower
 * than OpenBLAS, and the models take the im2col + sgemm paths instead. */
int deft_nn_vector_kernels(void);

/* ---- dense: out = inp W^T + b ------------------------------------------- */

/* out (B, OC), inp (B, C), w (OC, C), b (OC). */
void deft_dense_forward(float *out, const float *inp, const float *w,
                        const float *b, int B, int C, int OC);

/* dout (B, OC) is the gradient with respect to out. Writes dw (OC, C),
 * db (OC) and, unless dinp is NULL, dinp (B, C). */
void deft_dense_backward(float *dinp, float *dw, float *db, const float *dout,
                         const float *inp, const float *w, int B, int C,
                         int OC);

/* ---- conv2d: square kernel, zero padding, stride >= 1 ------------------- */

typedef struct {
    int c, h, w;   /* input channels and size                                */
    int oc, k;     /* output channels, kernel size                           */
    int pad;       /* zeros on each side: 0 is 'valid', (k-1)/2 is 'same'    */
    int stride;    /* 1, or 2 for a downsampling conv                        */
    int oh, ow;    /* output size: (h + 2*pad - k) / stride + 1, same for w  */
} deft_conv2d_shape_t;

/* Fills s; 0 if the output is empty (kernel larger than padded input) or
 * stride < 1. */
int deft_conv2d_shape(deft_conv2d_shape_t *s, int c, int h, int w, int oc,
                      int k, int pad, int stride);

/* dst (n, dh, dw) = src (n, h, w) placed at row and column off of each
 * plane, zeros around (a plain copy when the sizes are equal). */
void deft_nn_pad_planes(float *dst, const float *src, int n, int h, int w,
                        int dh, int dw, int off);

/* dst (n, h, w) = the h x w of each plane of src (n, sh, sw) from row and
 * column off: the adjoint's counterpart of deft_nn_pad_planes. */
void deft_nn_crop_planes(float *dst, const float *src, int n, int h, int w,
                         int sh, int sw, int off);

/* db (OC) = the bias gradient: the sums of dout (B, OC, P) over images
 * and pixels. */
void deft_conv2d_bias_grad(float *db, const float *dout, int B, int OC,
                           int P);

/* Floats of scratch any of the conv functions below needs (one image's
 * im2col buffers and padded planes). Layers may share one scratch. */
size_t deft_conv2d_scratch_floats(const deft_conv2d_shape_t *s);

/* 1 if Winograd's F(2x2, 3x3) (conv2d_winograd.c) can run s: a 3x3,
 * stride-1 conv of 4 or more input channels with an output of at least
 * 2x2. Whether the conv functions take it: deft_conv2d_uses_winograd. */
int deft_conv2d_winograd_ok(const deft_conv2d_shape_t *s);

/* 1 if deft_conv2d_backward, and deft_conv2d_forward unless the direct
 * kernel takes s, run Winograd's F(2x2, 3x3): deft_conv2d_winograd_ok and
 * an output larger than 16 pixels (a smaller one takes im2col with several
 * images per sgemm call). */
int deft_conv2d_uses_winograd(const deft_conv2d_shape_t *s);

/* Images per sgemm call of the Winograd path for s (its products have
 * N = that many times the tiles of an image as columns). */
int deft_conv2d_winograd_group(const deft_conv2d_shape_t *s);

/* Floats of scratch the two Winograd functions below need. */
size_t deft_conv2d_winograd_floats(const deft_conv2d_shape_t *s);

/* The forward and dense backward of deft_conv2d_forward/_backward, by
 * Winograd's F(2x2, 3x3); s must pass deft_conv2d_winograd_ok. Same
 * arguments and outputs; equal to the direct sums up to float rounding. */
void deft_conv2d_winograd_forward(float *out, const float *inp, const float *w,
                                  const float *b, int B,
                                  const deft_conv2d_shape_t *s, float *scratch,
                                  int relu);
void deft_conv2d_winograd_backward(float *dinp, float *dw, float *db,
                                   const float *dout, const float *inp,
                                   const float *w, int B,
                                   const deft_conv2d_shape_t *s,
                                   float *scratch);

/* 1 if deft_conv2d_backward_sparse handles s (kernel size k <= 8) and is
 * the fast choice on this machine (deft_nn_vector_kernels). */
int deft_conv2d_sparse_ok(const deft_conv2d_shape_t *s);

/* out (B, OC, OH, OW) = conv(inp (B, C, H, W), w (OC, C, k, k)) + b (OC),
 * followed by ReLU when relu != 0. b may be NULL (no bias). */
void deft_conv2d_forward(float *out, const float *inp, const float *w,
                         const float *b, int B, const deft_conv2d_shape_t *s,
                         float *scratch, int relu);

/* Dense backward. dout (B, OC, OH, OW) is the gradient with respect to the
 * pre-activation output. Writes dw (OC, C, k, k), db (OC) unless db is
 * NULL (no bias), and dinp (B, C, H, W) unless dinp is NULL (first layer). */
void deft_conv2d_backward(float *dinp, float *dw, float *db, const float *dout,
                          const float *inp, const float *w, int B,
                          const deft_conv2d_shape_t *s, float *scratch);

/* Sparse backward, for a conv whose output goes through a 2x2 max-pool:
 * there dout is zero except at one position per pool window. g (B, OC, Q)
 * holds those values (zeros allowed, and skipped) and idx (B, OC, Q) their
 * positions oy*OW + ox in the output plane. Same outputs as the dense
 * backward of the scattered dout, with about a quarter of the work.
 * Needs k <= 8 and stride 1; deft_conv2d_sparse_ok(s) says whether it is
 * also the fast choice here. db may be NULL (no bias). */
void deft_conv2d_backward_sparse(float *dinp, float *dw, float *db,
                                 const float *g, const int32_t *idx, int q,
                                 const float *inp, const float *w, int B,
                                 const deft_conv2d_shape_t *s, float *scratch);

/* ---- 2x2 max-pool, stride 2 (odd trailing row/column dropped) ----------- */

/* out (B, C, H/2, W/2); argmax (B, C, H/2, W/2) gets the index y*W + x of
 * each window's maximum in its (H, W) plane (first one on ties). */
void deft_maxpool2_forward(float *out, int32_t *argmax, const float *inp,
                           int B, int C, int H, int W);

/* dinp (B, C, H, W) = dout (B, C, H/2, W/2) scattered to argmax, zeros
 * elsewhere. */
void deft_maxpool2_backward(float *dinp, const float *dout,
                            const int32_t *argmax, int B, int C, int H, int W);

/* ---- ReLU ----------------------------------------------------------------- */

/* x (n) = max(x, 0), in place; a NaN stays NaN. */
void deft_relu_forward(float *x, size_t n);
/* dx (n) *= (y > 0), where y (n) is the ReLU's output. */
void deft_relu_backward(float *dx, const float *y, size_t n);

/* ---- batch normalization (per channel, eps 1e-5) -------------------------- */

/* Training mode. x, out (B, C, HW); 1-d BN is HW = 1. Normalizes with the
 * batch's mean and biased variance, writes them as mean (C) and invstd (C)
 * = 1/sqrt(var + eps) for the backward, and, unless run_mean is NULL,
 * updates run_mean (C) and run_var (C) by r = (1 - momentum) r +
 * momentum * stat with the unbiased variance (PyTorch's rule). ReLU
 * follows when relu != 0. out may not alias x. */
void deft_batchnorm_forward_train(float *out, float *mean, float *invstd,
                                  const float *x, const float *gamma,
                                  const float *beta, int B, int C, int HW,
                                  float *run_mean, float *run_var,
                                  float momentum, int relu);

/* Evaluation mode: normalizes with run_mean (C) and run_var (C). */
void deft_batchnorm_forward_eval(float *out, const float *x,
                                 const float *gamma, const float *beta,
                                 const float *run_mean, const float *run_var,
                                 int B, int C, int HW, int relu);

/* Backward of training mode. dout (B, C, HW) is the gradient with respect
 * to the normalized output (before any ReLU: the caller masks it); mean
 * and invstd are the forward's. Writes dgamma (C), dbeta (C) and, unless
 * NULL, dinp (B, C, HW), which may alias dout. */
void deft_batchnorm_backward(float *dinp, float *dgamma, float *dbeta,
                             const float *dout, const float *x,
                             const float *mean, const float *invstd,
                             const float *gamma, int B, int C, int HW);

/* ---- global average pooling, residual addition --------------------------- */

/* out (B, C) = the mean of each plane of inp (B, C, HW). */
void deft_gap_forward(float *out, const float *inp, int B, int C, int HW);
/* dinp (B, C, HW) = dout (B, C) / HW spread over each plane. */
void deft_gap_backward(float *dinp, const float *dout, int B, int C, int HW);

/* out (n) = a (n) + b (n); out may alias either. */
void deft_add_forward(float *out, const float *a, const float *b, size_t n);
/* acc (n) += x (n). */
void deft_add_inplace(float *acc, const float *x, size_t n);

/* ---- softmax cross-entropy ------------------------------------------------ */

/* logits (B, N), labels (B,) in [0, N). Adds the summed loss over the
 * batch to *loss_sum and the argmax hits to *correct (either may be NULL).
 * If dlogits (B, N) is not NULL it gets scale * (softmax - onehot). */
void deft_softmax_xent(float *dlogits, double *loss_sum, int *correct,
                       const float *logits, const int32_t *labels, int B,
                       int N, float scale);

/* ---- oneDNN convs and the channel-blocked layout ------------------------- */

/* The block size blk of oneDNN's channel-blocked layout on this machine
 * (conv2d_dnnl.c): 16 with AVX-512 JIT kernels, 8 with AVX2 ones, or 0
 * when oneDNN has no JIT conv here (the models then keep their own
 * kernels). A blocked tensor (B, C, H, W), C a multiple of blk, is held as
 * (B, C/blk, H*W, blk). */
int deft_dnnl_block(void);

/* One conv layer run by oneDNN: input (B, C, H, W) blocked if src_blocked
 * (else plain), output (B, OC, OH, OW) blocked; weights w (OC, C, k, k)
 * and bias b (OC) plain, as the parameter buffer holds them. */
typedef struct deft_dnnl_conv deft_dnnl_conv_t;

/* The scratchpad buffer the oneDNN convs of one model share (they must
 * run one at a time: one model, one thread); grows to the largest need.
 * NULL out of memory; destroy is NULL-safe. */
typedef struct deft_dnnl_scratch deft_dnnl_scratch_t;
deft_dnnl_scratch_t *deft_dnnl_scratch_create(void);
void deft_dnnl_scratch_destroy(deft_dnnl_scratch_t *s);

/* Makes the conv and its primitives for batch `batch` (other batches make
 * theirs in deft_dnnl_conv_prepare or on first use), with its scratchpads
 * on `scratch`. NULL when oneDNN cannot run s with JIT kernels here
 * (deft_dnnl_block() is 0, OC or a blocked C is not a multiple of blk, no
 * JIT kernel for the shape), batch < 1, scratch is NULL, or out of
 * memory. bias: the forward takes b and the backward gives db; dinp: the
 * backward can give dinp. */
deft_dnnl_conv_t *deft_dnnl_conv_create(const deft_conv2d_shape_t *s,
                                        int src_blocked, int bias, int dinp,
                                        int batch, deft_dnnl_scratch_t *scratch);
/* NULL-safe. */
void deft_dnnl_conv_destroy(deft_dnnl_conv_t *c);

/* Makes c's primitives for batch B (dropping another batch's) and grows
 * its scratchpad buffer to their need, so that forward and backward at B
 * allocate nothing and fail only if oneDNN's execution does. 0, or -1
 * out of memory (c then has no primitives; the next call retries). */
int deft_dnnl_conv_prepare(deft_dnnl_conv_t *c, int B);

/* out = conv(inp, w) + b, as deft_conv2d_forward (no ReLU). b is NULL
 * exactly when the conv was made without bias. 0, or -1 if b does not
 * match or oneDNN failed (out of memory preparing a new batch size). */
int deft_dnnl_conv_forward(deft_dnnl_conv_t *c, float *out, const float *inp,
                           const float *w, const float *b, int B);

/* The dense backward, as deft_conv2d_backward: writes dw, db (NULL exactly
 * when made without bias) and, unless NULL, dinp. 0, or -1 if db does not
 * match, dinp is given to a conv made without it, or oneDNN failed. */
int deft_dnnl_conv_backward(deft_dnnl_conv_t *c, float *dinp, float *dw,
                            float *db, const float *dout, const float *inp,
                            const float *w, int B);

/* dst blocked = src (B, C, HW) plain, and back; C a multiple of blk. */
void deft_nn_to_blocked(float *dst, const float *src, int B, int C, int HW,
                        int blk);
void deft_nn_from_blocked(float *dst, const float *src, int B, int C, int HW,
                          int blk);

/* The per-channel layers on blocked tensors (blocked.c): the same
 * arguments and definitions as their plain twins above, with the block
 * size last; C a multiple of blk. The GAP's output (B, C) is plain. The
 * pool's output and argmax are blocked, (B, C/blk, OH*OW, blk), each
 * argmax an index y*W + x in its (H, W) plane as in the plain layout. */
void deft_batchnorm_forward_train_blocked(
    float *out, float *mean, float *invstd, const float *x, const float *gamma,
    const float *beta, int B, int C, int HW, float *run_mean, float *run_var,
    float momentum, int relu, int blk);
void deft_batchnorm_forward_eval_blocked(float *out, const float *x,
                                         const float *gamma, const float *beta,
                                         const float *run_mean,
                                         const float *run_var, int B, int C,
                                         int HW, int relu, int blk);
/* The BN's backward; with relu_y (the BN + ReLU's output) the ReLU's
 * before it in the same pass: dout *= (relu_y > 0), in place, as
 * deft_relu_backward. relu_y NULL: dout is only read. */
void deft_batchnorm_backward_blocked(float *dinp, float *dgamma, float *dbeta,
                                     float *dout, const float *relu_y,
                                     const float *x, const float *mean,
                                     const float *invstd, const float *gamma,
                                     int B, int C, int HW, int blk);
void deft_gap_forward_blocked(float *out, const float *inp, int B, int C,
                              int HW, int blk);
void deft_gap_backward_blocked(float *dinp, const float *dout, int B, int C,
                               int HW, int blk);
void deft_maxpool2_forward_blocked(float *out, int32_t *argmax,
                                   const float *inp, int B, int C, int H,
                                   int W, int blk);
void deft_maxpool2_backward_blocked(float *dinp, const float *dout,
                                    const int32_t *argmax, int B, int C, int H,
                                    int W, int blk);

/* ---- for tests ------------------------------------------------------------ */

struct deft_model;
/* A hash of the piecewise-linear pattern of the last forward pass on batch
 * examples: the sign of every ReLU output and every pool argmax. Finite
 * differences are valid across a step exactly when it is unchanged. */
uint64_t deft_model_pattern_hash(const struct deft_model *m, int batch);

#endif
