/* deft_optim_state_load, then a step when it succeeds, on two optimizers
 * of one worker each: DEF over RBGS (ratio 4, momentum, weight decay, two
 * groups of hyperparameters) on two tensors (10 and 7 values), and DEF
 * over powersgd (rank 2) on a 4x5 matrix and a 7-vector, whose state also
 * holds the warm-start Q. tests/fuzz/corpus/optim_state holds states both
 * saved after a few steps (version 1 blobs from before the groups, and
 * version 2). Input: the state bytes, offered to both as they are, and
 * once more with their last 4 bytes replaced by the CRC-32 of the rest,
 * so that the fuzzer reaches the reader behind the checksum. Each version
 * is also re-sharded as the state of 2 identical workers to 3 and back to
 * 1, and measured as the head of a longer buffer (a checkpoint's). */
#include "fuzz.h"

#include "core/internal.h"
#include "deft.h"
#include "optim/optim_internal.h"

enum { N_OPT = 2, MAX_D = 27 };
static deft_optim_t *opts[N_OPT];
static deft_comm_t *comm;

/* Fresh optimizers for every input, so that nothing one input leaves in
 * them (state that is not saved) can make another crash. */
static void setup(void)
{
    static const size_t sizes[N_OPT][2] = {{10, 7}, {20, 7}};
    static const size_t rows[2] = {4, 0};
    float x0[MAX_D];
    for (int i = 0; i < MAX_D; i++)
        x0[i] = 0.1f * (float)(i - 8);
    if (deft_comm_create_self(&comm) != DEFT_OK)
        abort();
    for (int k = 0; k < N_OPT; k++) {
        deft_layout_t layout = {2, sizes[k], k ? rows : NULL};
        deft_optim_config_t cfg;
        deft_optim_config_init(&cfg);
        cfg.algo = DEFT_ALGO_DEF;
        cfg.compressor = k ? DEFT_COMP_POWERSGD : DEFT_COMP_RBGS;
        cfg.ratio = 4;
        cfg.powersgd_rank = 2;
        cfg.lr = 0.1f;
        cfg.momentum = 0.9f;
        cfg.weight_decay = 1e-4f;
        if (deft_optim_create(&opts[k], comm, &layout, x0, &cfg) != DEFT_OK)
            abort();
    }
    static const deft_group_t groups[2] = {{0.1f, 0.9f, 0.0f, 1e-4f, 0},
                                           {0.05f, 0.5f, 0.0f, 0.0f, 1}};
    static const uint32_t tgroup[2] = {0, 1};
    if (deft_optim_set_groups(opts[0], 2, groups, tgroup) != DEFT_OK)
        abort();
}

static void teardown(void)
{
    for (int k = 0; k < N_OPT; k++)
        deft_optim_destroy(opts[k]), opts[k] = NULL;
    deft_comm_destroy(comm);
    comm = NULL;
}

/* One step with the gradient x - 0.5 (a quadratic's). */
static deft_status_t step(deft_optim_t *opt)
{
    const float *x;
    float g[MAX_D];
    deft_status_t st = deft_optim_ask(opt, &x);
    if (st != DEFT_OK)
        return st;
    for (size_t i = 0; i < deft_optim_dim(opt); i++)
        g[i] = x[i] - 0.5f;
    return deft_optim_tell(opt, g, NULL);
}

/* The re-sharding reader paths: what it accepts, it can re-shard again. */
static void reshard(const uint8_t *blob, size_t size)
{
    if (size == 0 || size > (1u << 20))
        return;
    uint8_t *two = malloc(2 * size + 8), *three = malloc(3 * size);
    if (!two || !three)
        abort();
    memcpy(two, blob, size);
    memcpy(two + size, blob, size);
    if (deft_optim_state_reshard(two, size, 2, three, 3, DEFT_RESHARD_MEAN) ==
            DEFT_OK &&
        deft_optim_state_reshard(three, size, 3, two, 1, DEFT_RESHARD_ZERO) !=
            DEFT_OK)
        abort();
    /* A valid blob followed by other bytes is found to end by its size. */
    deft_state_view_t v;
    if (deft_state_view(blob, size, &v, "fuzz") == DEFT_OK) {
        memcpy(two, blob, size);
        memset(two + size, 0x5a, 8);
        size_t n = 0;
        if (deft_state_blob_size(two, size + 8, &n, "fuzz") != DEFT_OK ||
            n > size)
            abort();
    }
    free(two);
    free(three);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reshard(data, size);
    setup();
    for (int k = 0; k < N_OPT; k++)
        if (deft_optim_state_load(opts[k], data, size) == DEFT_OK)
            (void)step(opts[k]);
    teardown();
    if (size < 4 || size > (1u << 20))
        return 0;
    uint8_t *fixed = malloc(size);
    if (!fixed)
        return 0;
    memcpy(fixed, data, size);
    uint32_t crc = deft_crc32(0, fixed, size - 4);
    memcpy(fixed + size - 4, &crc, 4);
    reshard(fixed, size);
    setup();
    for (int k = 0; k < N_OPT; k++)
        if (deft_optim_state_load(opts[k], fixed, size) == DEFT_OK)
            (void)step(opts[k]);
    teardown();
    free(fixed);
    return 0;
}

/* Writes the corpus: each optimizer's states after 0, 1, 3 and 7 steps
 * (argv[1] = dir). Built only into the replay driver's seed tool. */
#ifdef DEFT_FUZZ_MAKE_SEEDS
int main(int argc, char **argv)
{
    static const char *const prefix[N_OPT] = {"state", "powersgd"};
    if (argc != 2)
        return 2;
    setup();
    for (int k = 0; k < N_OPT; k++) {
        size_t n = deft_optim_state_size(opts[k]);
        unsigned char *buf = malloc(n);
        if (!buf)
            return 1;
        for (int s = 0; s <= 7; s++) {
            if (s == 0 || s == 1 || s == 3 || s == 7) {
                char path[512];
                snprintf(path, sizeof path, "%s/%s-v2-step%d", argv[1], prefix[k], s);
                if (deft_optim_state_save(opts[k], buf, n) != DEFT_OK ||
                    fuzz_write(path, buf, n, 0))
                    return 1;
            }
            if (step(opts[k]) != DEFT_OK)
                return 1;
        }
        free(buf);
    }
    teardown();
    return 0;
}
#endif
