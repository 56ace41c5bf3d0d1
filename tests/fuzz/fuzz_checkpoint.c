/* The checkpoint file reader. Input: byte 0: bit 0 = replace the file's
 * last 4 bytes with the CRC-32 of the rest (so that mutations get past
 * the checksum to the fields behind it); the rest is the file. */
#include "fuzz.h"

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
    }
    free(states);
    unlink(path);
    return 0;
}

/* Writes the seed corpus (argv[1] = dir): small checkpoints of 1 to 3
 * workers, with the flag byte in front. */
#ifdef DEFT_FUZZ_MAKE_SEEDS
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
    return 0;
}
#endif
