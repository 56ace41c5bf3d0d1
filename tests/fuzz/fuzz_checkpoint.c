/* The checkpoint file reader, and re-sharding what it read. Input: byte 0:
 * bit 0 = replace the file's last 4 bytes with the CRC-32 of the rest (so
 * that mutations get past the checksum to the fields behind it), bits 1-2
 * + 1 = the worker count to re-shard to, bit 3 = the zero rule; the rest
 * is the file. Seeds hold states of a real optimizer (and 3 BN floats
 * each) as well as arbitrary bytes, in the current format and in
 * version 1 (ckpt-v1-*, whose optimizer blob length is found by its
 * checksum). */
#include "fuzz.h"

#include "deft.h"
#include "train/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int flags = data[0];
    data++, size--;
    uint8_t *file = malloc(size ? size : 1);
    if (!file)
        abort();
    memcpy(file, data, size);
    if ((flags & 1) && size >= 4) {
        uint32_t c = (uint32_t)crc32(crc32(0L, Z_NULL, 0), file, (uInt)(size - 4));
        memcpy(file + size - 4, &c, 4);
    }
    const char *path = fuzz_path("ckpt");
    if (fuzz_write(path, file, size, 0))
        abort();
    free(file);
    deft_ckpt_meta_t meta;
    void *states = NULL;
    size_t ssz = 0;
    if (deft_checkpoint_read(path, &meta, &states, &ssz) == DEFT_OK) {
        /* Every state byte it claims must be readable. */
        volatile unsigned char sum = 0;
        for (size_t i = 0; i < ssz * meta.workers; i++)
            sum ^= ((unsigned char *)states)[i];
        (void)sum;
        /* What re-shards once re-shards again (to one worker). */
        void *out = NULL, *again = NULL;
        if (deft_checkpoint_reshard_states(&meta, states, ssz, 1 + ((flags >> 1) & 3),
                                           (flags & 8) ? DEFT_RESHARD_ZERO
                                                       : DEFT_RESHARD_MEAN,
                                           &out) == DEFT_OK &&
            (meta.workers != 1u + ((flags >> 1) & 3) ||
             deft_checkpoint_reshard_states(&meta, out, ssz, 1, DEFT_RESHARD_MEAN,
                                            &again) != DEFT_OK))
            abort();
        free(out);
        free(again);
    }
    free(states);
    unlink(path);
    return 0;
}

#ifdef DEFT_FUZZ_MAKE_SEEDS
/* Checkpoints of 2 workers holding a real DEF state after 3 steps (both
 * workers the same, as one worker's run twice), and 3 BN floats each. */
static int real_state_seeds(const char *dir)
{
    static const size_t sizes[2] = {10, 7};
    float x0[17], g[17];
    for (int i = 0; i < 17; i++)
        x0[i] = 0.1f * (float)(i - 8);
    deft_comm_t *comm;
    deft_optim_t *opt;
    deft_layout_t layout = {2, sizes, NULL};
    deft_optim_config_t cfg;
    deft_optim_config_init(&cfg);
    cfg.ratio = 4;
    if (deft_comm_create_self(&comm) != DEFT_OK ||
        deft_optim_create(&opt, comm, &layout, x0, &cfg) != DEFT_OK)
        return 1;
    for (int s = 0; s < 3; s++) {
        const float *x;
        deft_optim_ask(opt, &x);
        for (int i = 0; i < 17; i++)
            g[i] = x[i] - 0.5f;
        if (deft_optim_tell(opt, g, NULL) != DEFT_OK)
            return 1;
    }
    const size_t osz = deft_optim_state_size(opt), ssz = osz + 3 * sizeof(float);
    unsigned char *states = calloc(2, ssz);
    if (!states || deft_optim_state_save(opt, states, osz) != DEFT_OK)
        return 1;
    memcpy(states + ssz, states, osz);
    deft_ckpt_meta_t meta;
    memset(&meta, 0, sizeof meta);
    meta.workers = 2;
    meta.algo = (uint32_t)cfg.algo;
    meta.compressor = (uint32_t)cfg.compressor;
    meta.ratio = cfg.ratio;
    meta.dim = 17;
    meta.batch = 12;
    meta.step = 3;
    meta.optim_bytes = osz;
    const char *tmp = fuzz_path("seed");
    if (deft_checkpoint_write(tmp, &meta, states, ssz) != DEFT_OK)
        return 1;
    FILE *f = fopen(tmp, "rb");
    static unsigned char buf[1 << 14];
    size_t n = f ? fread(buf + 1, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    unlink(tmp);
    for (int flag = 0; flag < 16; flag += 5) {
        char path[512];
        snprintf(path, sizeof path, "%s/ckpt-def-state-flag%d", dir, flag);
        buf[0] = (unsigned char)flag;
        if (n == 0 || fuzz_write(path, buf, n + 1, 0))
            return 1;
    }
    free(states);
    deft_optim_destroy(opt);
    deft_comm_destroy(comm);
    return 0;
}

/* Writes the seed corpus (argv[1] = dir): small checkpoints of 1 to 3
 * workers, with the flag byte in front. */
int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    for (uint32_t workers = 1; workers <= 3; workers++) {
        deft_ckpt_meta_t meta;
        memset(&meta, 0, sizeof meta);
        meta.workers = workers;
        meta.model = 2;
        meta.dim = 17;
        meta.batch = 32;
        meta.epochs_done = workers;
        meta.step = 10 * workers;
        meta.ratio = 64;
        meta.lambda = 0.3;
        unsigned char states[3 * 24];
        for (size_t i = 0; i < sizeof states; i++)
            states[i] = (unsigned char)(i * 7 + workers);
        const char *tmp = fuzz_path("seed");
        if (deft_checkpoint_write(tmp, &meta, states, 24) != DEFT_OK)
            return 1;
        FILE *f = fopen(tmp, "rb");
        unsigned char buf[4096];
        size_t n = f ? fread(buf + 1, 1, sizeof buf - 1, f) : 0;
        if (f)
            fclose(f);
        unlink(tmp);
        for (int flag = 0; flag < 2; flag++) {
            char path[512];
            snprintf(path, sizeof path, "%s/ckpt-%uworkers-crc%d", argv[1],
                     workers, flag);
            buf[0] = (unsigned char)flag;
            if (n == 0 || fuzz_write(path, buf, n + 1, 0))
                return 1;
        }
    }
    return real_state_seeds(argv[1]);
}
#endif
