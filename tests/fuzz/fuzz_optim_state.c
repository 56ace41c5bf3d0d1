/* deft_optim_state_load, then a step when it succeeds. The optimizer is
 * DEF over RBGS (ratio 4, momentum, weight decay) on two tensors (10 and
 * 7 values), one worker; tests/fuzz/corpus/optim_state holds states it
 * saved after a few steps. Input: the state bytes. */
#include "fuzz.h"

#include "deft.h"

static deft_optim_t *opt;
static deft_comm_t *comm;

/* A fresh optimizer for every input, so that nothing one input leaves in
 * it (state that is not saved) can make another crash. */
static void setup(void)
{
    static const size_t sizes[] = {10, 7};
    deft_layout_t layout = {2, sizes, NULL};
    float x0[17];
    for (int i = 0; i < 17; i++)
        x0[i] = 0.1f * (float)(i - 8);
    deft_optim_config_t cfg;
    deft_optim_config_init(&cfg);
    cfg.algo = DEFT_ALGO_DEF;
    cfg.compressor = DEFT_COMP_RBGS;
    cfg.ratio = 4;
    cfg.lr = 0.1f;
    cfg.momentum = 0.9f;
    cfg.weight_decay = 1e-4f;
    if (deft_comm_create_self(&comm) != DEFT_OK ||
        deft_optim_create(&opt, comm, &layout, x0, &cfg) != DEFT_OK)
        abort();
}

static void teardown(void)
{
    deft_optim_destroy(opt);
    deft_comm_destroy(comm);
    opt = NULL, comm = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    setup();
    const float *x;
    if (deft_optim_state_load(opt, data, size) == DEFT_OK &&
        deft_optim_ask(opt, &x) == DEFT_OK) {
        float g[17];
        for (int i = 0; i < 17; i++)
            g[i] = x[i] - 0.5f;
        (void)deft_optim_tell(opt, g, NULL);
    }
    teardown();
    return 0;
}

/* Writes the corpus: states after 0, 1, 3 and 7 steps (argv[1] = dir).
 * Built only into the replay driver's seed tool. */
#ifdef DEFT_FUZZ_MAKE_SEEDS
int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    setup();
    size_t n = deft_optim_state_size(opt);
    unsigned char *buf = malloc(n);
    for (int s = 0, saved = 0; s <= 7; s++) {
        if (s == 0 || s == 1 || s == 3 || s == 7) {
            char path[512];
            snprintf(path, sizeof path, "%s/state-step%d", argv[1], s);
            if (!buf || deft_optim_state_save(opt, buf, n) != DEFT_OK ||
                fuzz_write(path, buf, n, 0))
                return 1;
            saved++;
        }
        const float *x;
        float g[17];
        if (deft_optim_ask(opt, &x) != DEFT_OK)
            return 1;
        for (int i = 0; i < 17; i++)
            g[i] = x[i] - 0.5f;
        if (deft_optim_tell(opt, g, NULL) != DEFT_OK)
            return 1;
    }
    free(buf);
    teardown();
    return 0;
}
#endif
