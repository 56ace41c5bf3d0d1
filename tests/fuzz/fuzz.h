/* Shared by the libFuzzer targets in tests/fuzz/ (one reader or parser
 * each) and by replay.c, which runs the same targets over the seed and
 * regression corpora without clang (ctest fuzz_replay_<target>).
 *
 * Every target takes arbitrary bytes and must end with a clear status:
 * any crash, sanitizer report, leak or allocation over libFuzzer's
 * -malloc_limit_mb is a bug. */
#ifndef DEFT_FUZZ_H
#define DEFT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A private file for this process (name = tag), in TMPDIR or /tmp,
 * rewritten with each input. */
static inline const char *fuzz_path(const char *tag)
{
    static char buf[8][300];
    static int next;
    char *p = buf[next++ & 7];
    const char *dir = getenv("TMPDIR");
    snprintf(p, sizeof buf[0], "%s/deft-fuzz-%ld-%s", dir && *dir ? dir : "/tmp",
             (long)getpid(), tag);
    return p;
}

/* Writes data to path, gzip-compressed if gz; returns 0 on success. */
static inline int fuzz_write(const char *path, const uint8_t *data, size_t size,
                             int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb1");
        if (!f)
            return -1;
        int ok = size == 0 || gzwrite(f, data, (unsigned)size) == (int)size;
        return gzclose(f) == Z_OK && ok ? 0 : -1;
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = size == 0 || fwrite(data, 1, size, f) == size;
    return fclose(f) == 0 && ok ? 0 : -1;
}

#ifdef DEFT_DATA_H
/* What a reader promises: on success a non-empty set whose labels are in
 * [0, n_classes), on error an empty one. Frees it. */
static inline void fuzz_check_dataset(deft_dataset_t *ds, deft_status_t st)
{
    if (st == DEFT_OK) {
        if (ds->n == 0 || !ds->x || !ds->y || ds->w <= 0 || ds->n_classes < 1)
            abort();
        for (size_t i = 0; i < ds->n; i++)
            if (ds->y[i] < 0 || ds->y[i] >= ds->n_classes)
                abort();
        deft_dataset_free(ds);
    } else if (ds->x || ds->y || ds->n) {
        abort(); /* "on error out is left empty" */
    }
}
#endif

#endif
