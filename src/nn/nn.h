/* Neural-network models over one flat parameter buffer.
 *
 * A model owns no parameters: every call takes params (P,) and, for
 * training, writes grad (P,). The parameter vector is the concatenation of
 * the model's tensors in the order of deft_model_layout() (for each layer:
 * weight, then bias), which is also the optimizer's layout. A model owns
 * its scratch (activations, im2col buffers) sized for max_batch at create
 * time, so forward/backward with deft's own kernels never allocate. On
 * oneDNN's convs (deft_convs_t), a batch size the model has not run yet
 * makes that size's conv primitives first (and may fail with
 * DEFT_ERR_NOMEM, before anything is computed). A model object is used
 * by one thread at a time; each worker makes its own.
 *
 * Images are NCHW floats: x is (B, C, H, W); labels are (B,) int32 in
 * [0, n_classes). Matrix products go through OpenBLAS's cblas_sgemm; the
 * BN models' convs through oneDNN where it runs (deft_convs_t).
 */
#ifndef DEFT_NN_H
#define DEFT_NN_H

#include "deft.h"

#include <stddef.h>
#include <stdint.h>

typedef enum {
    DEFT_MODEL_LOGREG = 0, /* softmax regression: dense (C*H*W -> classes)  */
    DEFT_MODEL_MLP,        /* dense 784-512-512-10 with ReLU                */
    DEFT_MODEL_LENET,      /* conv5x5(6) pool conv5x5(16) pool fc120 fc84
                              fc10, ReLU; ~62k parameters on 28x28 input    */
    DEFT_MODEL_VGG,        /* conv3x3 32-32 pool 64-64 pool, fc256, fc10    */
    DEFT_MODEL_PRERESNET20, /* pre-activation ResNet-20 (the DEF paper's
                              models/preresnet.py at depth 20), stages of
                              16/32/64 channels at 28/14/7 pixels, batch
                              norm, global average pool, fc10            */
    DEFT_MODEL_VGG11BN     /* VGG-11 with batch norm at half width: conv3x3
                              32 pool 64 pool 128-128 pool 256-256 pool
                              256-256, fc256 fc256 fc10                   */
} deft_model_kind_t;

/* Initializations (deft_model_init_params). */
typedef enum {
    DEFT_INIT_TORCH = 0, /* as the PyTorch model is built: conv and dense
                            weights and biases U(+-1/sqrt(fan_in)) (nn's
                            default); preresnet20 and vgg11bn keep the DEF
                            code's conv rule N(0, 2/(k*k*out_channels)),
                            zero conv bias. BN gamma = 1, beta = 0.      */
    DEFT_INIT_HE         /* He normal for every layer but the last, Glorot
                            normal for the last, zero biases             */
} deft_init_t;

/* "torch", "he"; parse names the bad string. */
const char *deft_init_name(deft_init_t init);
deft_status_t deft_init_parse(const char *name, deft_init_t *out);

/* Momentum of the BN running statistics in training (PyTorch's 0.1). */
#define DEFT_BN_MOMENTUM 0.1f

typedef struct deft_model deft_model_t;

/* Makes a model for inputs (C, H, W) and n_classes outputs, with scratch
 * for batches of up to max_batch. */
deft_status_t deft_model_create(deft_model_t **out, deft_model_kind_t kind,
                                int c, int h, int w, int n_classes,
                                int max_batch);
/* The same, with the gradient buffers sized for training batches of at
 * most max_train_batch <= max_batch (deft_model_loss_grad's limit), while
 * evaluation takes up to max_batch: the trainer evaluates in larger
 * chunks than it trains, and the gradients of a deep model are as large
 * as its activations. */
deft_status_t deft_model_create_sized(deft_model_t **out,
                                      deft_model_kind_t kind, int c, int h,
                                      int w, int n_classes, int max_batch,
                                      int max_train_batch);
/* NULL-safe. */
void deft_model_destroy(deft_model_t *m);

/* The smallest batch deft_model_loss_grad and deft_model_recalibrate take:
 * 2 when a batch-norm layer sees a 1x1 map (vgg11bn's last ones on
 * 28x28), else 1. */
int deft_model_min_train_batch(const deft_model_t *m);
/* 1 for the models with batch norm (preresnet20, vgg11bn). */
int deft_model_kind_has_bn(deft_model_kind_t kind);

/* "logreg", "mlp", "lenet", "vgg", "preresnet20", "vgg11bn"; "?" for
 * unknown. Parse returns
 * DEFT_ERR_INVALID_ARG naming the unknown string. */
const char *deft_model_name(deft_model_kind_t kind);
deft_status_t deft_model_parse(const char *name, deft_model_kind_t *out);

/* Number of parameters P, and the list of tensor sizes (valid while the
 * model lives). */
size_t deft_model_num_params(const deft_model_t *m);
const deft_layout_t *deft_model_layout(const deft_model_t *m);

/* Writes the initialization `init` into params (P,), drawn from deft's
 * counter-based RNG keyed by (seed, tensor): the same seed gives the same
 * bits on every backend and worker count. */
void deft_model_init_params(const deft_model_t *m, float *params,
                            uint64_t seed, deft_init_t init);

/* Which kernels run a model's convs. */
typedef enum {
    DEFT_CONVS_AUTO = 0, /* oneDNN's JIT convs in its channel-blocked layout
                            where the model's convs allow it and this CPU
                            has AVX2 or AVX-512 (preresnet20, vgg11bn);
                            deft's own kernels elsewhere (the default)   */
    DEFT_CONVS_OWN       /* deft's own kernels (im2col + OpenBLAS sgemm,
                            Winograd F(2x2, 3x3), direct), plain layout  */
} deft_convs_t;

/* "auto", "own"; "?" for anything else. */
const char *deft_convs_name(deft_convs_t convs);

/* Puts m's convs on `convs` (create's choice is DEFT_CONVS_AUTO). Both
 * compute the same function up to float rounding (the tests check it);
 * each is bitwise repeatable. AUTO falls back to deft's kernels wherever
 * oneDNN cannot take the model (deft_model_onednn says which it got).
 * NULL-safe. */
void deft_model_set_convs(deft_model_t *m, deft_convs_t convs);
/* oneDNN's block size (16 or 8) while its convs run m, else 0. */
int deft_model_onednn(const deft_model_t *m);


/* Buffers outside the optimizer: the BN running statistics, for each BN
 * layer in build order its running mean (C) then running variance (C);
 * 0 floats (and NULL) for models without BN. deft_model_loss_grad updates
 * them (momentum DEFT_BN_MOMENTUM, unbiased variance), deft_model_evaluate
 * reads them. The caller may overwrite them (averaging over workers,
 * checkpoints). Reset sets every mean to 0 and variance to 1, as at
 * create. */
size_t deft_model_num_buffers(const deft_model_t *m);
float *deft_model_buffers(deft_model_t *m);
void deft_model_reset_buffers(deft_model_t *m);

/* BN recalibration: a training-mode forward of x (B, C, H, W) at params
 * that folds this batch's statistics into the buffers as batch number
 * `index` (0-based) of a plain mean, so that after batches 0..n-1 the
 * buffers hold their average (call deft_model_reset_buffers first).
 * Computes no gradient; a no-op for models without BN. */
deft_status_t deft_model_recalibrate(deft_model_t *m, const float *params,
                                     const float *x, int batch, int index);

/* The logits (batch, n_classes) of the last forward pass (for tests and
 * tools); valid until the next call on m. */
const float *deft_model_logits(const deft_model_t *m);

/* Mean softmax cross-entropy over the batch and its gradient with respect
 * to params, in training mode (BN uses the batch's statistics and updates
 * the running ones): x (B, C, H, W), labels (B,),
 * deft_model_min_train_batch(m) <= B <= max_train_batch. grad (P,) is
 * overwritten. *correct (may be NULL) gets the number of argmax hits. */
deft_status_t deft_model_loss_grad(deft_model_t *m, const float *params,
                                   const float *x, const int32_t *labels,
                                   int batch, float *grad, double *loss,
                                   int *correct);

/* Forward only, in evaluation mode (BN uses the running statistics), of
 * 1 <= B <= max_batch examples: summed (not mean) cross-entropy into
 * *loss_sum and the number of correct argmax predictions into *correct. */
deft_status_t deft_model_evaluate(deft_model_t *m, const float *params,
                                  const float *x, const int32_t *labels,
                                  int batch, double *loss_sum, int *correct);

#endif
