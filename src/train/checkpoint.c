#include "train/checkpoint.h"

#include "core/internal.h"
#include "optim/optim_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define CKPT_MAGIC "DEFTCKPT"
#define CKPT_VERSION 2u
/* Version 1's meta: this one without optim_bytes. */
#define CKPT_META_V1 (sizeof(deft_ckpt_meta_t) - sizeof(uint64_t))

/* fwrite that also feeds the running CRC. */
static int put(FILE *f, uint32_t *crc, const void *p, size_t n)
{
    *crc = deft_crc32(*crc, p, n);
    return fwrite(p, 1, n, f) == n ? 0 : -1;
}

/* fsyncs the directory holding path, so that the rename itself survives
 * a crash. Best effort where the file system cannot (EINVAL, ENOTSUP) or
 * the directory cannot be opened for it (EACCES): the new checkpoint is in
 * place either way, so only a real I/O error fails the write. */
static deft_status_t sync_dir(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return DEFT_OK;
    int rc = fsync(fd), err = errno;
    close(fd);
    if (rc != 0 && err == EIO)
        return deft_fail(DEFT_ERR_IO, "checkpoint %s written, but syncing its "
                         "directory %s failed: %s", path, dir, strerror(err));
    return DEFT_OK;
}

deft_status_t deft_checkpoint_write(const char *path, const deft_ckpt_meta_t *meta,
                                    const void *states, size_t state_size)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return deft_fail(DEFT_ERR_INVALID_ARG, "checkpoint path too long: %s", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return deft_fail(DEFT_ERR_IO, "cannot write checkpoint %s: %s", tmp,
                         strerror(errno));
    uint32_t crc = 0;
    uint32_t version = CKPT_VERSION, meta_size = sizeof *meta;
    uint64_t ssz = state_size;
    uint32_t workers = meta->workers;
    int bad = put(f, &crc, CKPT_MAGIC, 8) || put(f, &crc, &version, 4) ||
              put(f, &crc, &meta_size, 4) || put(f, &crc, meta, sizeof *meta) ||
              put(f, &crc, &ssz, 8) || put(f, &crc, &workers, 4) ||
              put(f, &crc, states, state_size * workers);
    uint32_t c32 = crc;
    bad = bad || fwrite(&c32, 4, 1, f) != 1;
    /* On disk before it replaces the old one: after a crash the path holds
     * either the old checkpoint or this one, whole. */
    bad = bad || fflush(f) != 0 || fsync(fileno(f)) != 0;
    int err = bad ? errno : 0;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    if (bad) {
        remove(tmp);
        return deft_fail(DEFT_ERR_IO, "writing checkpoint %s failed: %s", tmp,
                         err ? strerror(err) : "short write");
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        remove(tmp);
        return deft_fail(DEFT_ERR_IO, "cannot rename %s to %s: %s", tmp, path,
                         strerror(err));
    }
    return sync_dir(path);
}

deft_status_t deft_checkpoint_read(const char *path, deft_ckpt_meta_t *meta,
                                   void **states, size_t *state_size)
{
    *states = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return deft_fail(DEFT_ERR_IO, "cannot open checkpoint %s: %s", path,
                         strerror(errno));
    deft_status_t st = DEFT_OK;
    unsigned char *buf = NULL;
    if (fseek(f, 0, SEEK_END) != 0) {
        st = deft_fail(DEFT_ERR_IO, "cannot seek in checkpoint %s", path);
        goto out;
    }
    long len = ftell(f);
    rewind(f);
    size_t head = 8 + 4 + 4 + CKPT_META_V1 + 8 + 4;
    if (len < 0 || (size_t)len < head + 4) {
        st = deft_fail(DEFT_ERR_FORMAT, "checkpoint %s is truncated (%ld bytes)",
                       path, len);
        goto out;
    }
    buf = malloc((size_t)len);
    if (!buf) {
        st = deft_fail(DEFT_ERR_NOMEM, "no memory to read checkpoint %s", path);
        goto out;
    }
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
        st = deft_fail(DEFT_ERR_IO, "reading checkpoint %s failed", path);
        goto out;
    }
    if (memcmp(buf, CKPT_MAGIC, 8) != 0) {
        st = deft_fail(DEFT_ERR_FORMAT, "%s is not a deft checkpoint (bad magic)",
                       path);
        goto out;
    }
    uint32_t version, meta_size, workers, c32;
    uint64_t ssz;
    memcpy(&version, buf + 8, 4);
    memcpy(&meta_size, buf + 12, 4);
    if (!(version == CKPT_VERSION && meta_size == sizeof *meta) &&
        !(version == 1 && meta_size == CKPT_META_V1)) {
        st = deft_fail(DEFT_ERR_FORMAT, "checkpoint %s has version %u (meta %u "
                       "bytes); this build reads versions 1 and %u", path,
                       version, meta_size, CKPT_VERSION);
        goto out;
    }
    head = 8 + 4 + 4 + (size_t)meta_size + 8 + 4;
    if ((size_t)len < head + 4) {
        st = deft_fail(DEFT_ERR_FORMAT, "checkpoint %s is truncated (%ld bytes)",
                       path, len);
        goto out;
    }
    memset(meta, 0, sizeof *meta);
    memcpy(meta, buf + 16, meta_size);
    memcpy(&ssz, buf + 16 + meta_size, 8);
    memcpy(&workers, buf + 24 + meta_size, 4);
    if (workers == 0 || workers != meta->workers || ssz == 0 ||
        ssz > ((uint64_t)len - head - 4) / workers ||
        head + ssz * workers + 4 != (uint64_t)len) {
        st = deft_fail(DEFT_ERR_FORMAT, "checkpoint %s is truncated or corrupt "
                       "(%ld bytes for %u workers of %llu bytes)", path, len,
                       workers, (unsigned long long)ssz);
        goto out;
    }
    memcpy(&c32, buf + len - 4, 4);
    if (deft_crc32(0, buf, (size_t)len - 4) != c32) {
        st = deft_fail(DEFT_ERR_FORMAT, "checkpoint %s is corrupt (checksum "
                       "mismatch)", path);
        goto out;
    }
    *state_size = (size_t)ssz;
    *states = malloc((size_t)ssz * workers);
    if (!*states) {
        st = deft_fail(DEFT_ERR_NOMEM, "no memory for checkpoint %s", path);
        goto out;
    }
    memcpy(*states, buf + head, (size_t)ssz * workers);
out:
    free(buf);
    fclose(f);
    return st;
}

void deft_checkpoint_worker_counts(uint32_t batch, int max, const char *sep,
                                   char *buf, size_t n)
{
    size_t len = 0;
    int shown = 0;
    buf[0] = '\0';
    for (uint32_t k = 1; k <= batch && k <= DEFT_MAX_WORKERS && shown < max; k++)
        if (batch % k == 0 && len < n) {
            len += (size_t)snprintf(buf + len, n - len, "%s%u", shown ? sep : "",
                                    k);
            shown++;
        }
}

deft_status_t deft_checkpoint_reshard_states(deft_ckpt_meta_t *meta,
                                             const void *states,
                                             size_t state_size, int k_out,
                                             deft_reshard_t mode, void **out)
{
    *out = NULL;
    if (k_out < 1 || k_out > DEFT_MAX_WORKERS)
        return deft_fail(DEFT_ERR_INVALID_ARG, "cannot re-shard to %d workers: "
                         "the count must be in [1, %d]", k_out, DEFT_MAX_WORKERS);
    if (meta->batch % (uint32_t)k_out != 0) {
        char ks[128];
        deft_checkpoint_worker_counts(meta->batch, 12, ", ", ks, sizeof ks);
        return deft_fail(DEFT_ERR_INVALID_ARG, "cannot re-shard to %d workers: "
                         "the run's global batch %u does not split evenly over "
                         "%d (the batch is kept, so the averaged gradient and "
                         "the schedule keep their meaning); worker counts that "
                         "divide it: %s. A run that may lose hosts can choose a "
                         "batch that every count it may continue on divides, "
                         "e.g. 96 or 120 for 4 and 3", k_out, meta->batch,
                         k_out, ks);
    }
    size_t optim_size = (size_t)meta->optim_bytes;
    deft_status_t st = DEFT_OK;
    if (optim_size == 0) /* version 1: found by its checksum */
        st = deft_state_blob_size(states, state_size, &optim_size,
                                  "checkpoint");
    else if (optim_size > state_size || (state_size - optim_size) % 4 != 0)
        st = deft_fail(DEFT_ERR_FORMAT, "checkpoint: its header says the "
                       "optimizer's state has %zu of each worker's %zu bytes",
                       optim_size, state_size);
    if (st != DEFT_OK)
        return st;
    deft_state_view_t v;
    if ((st = deft_state_view(states, optim_size, &v,
                              "checkpoint")) != DEFT_OK)
        return st;
    if ((state_size - optim_size) % sizeof(float) != 0)
        return deft_fail(DEFT_ERR_FORMAT, "checkpoint: each worker's %zu bytes "
                         "hold an optimizer state of %zu and a remainder that "
                         "is not whole floats", state_size, optim_size);
    if (v.algo != meta->algo || v.compressor != meta->compressor ||
        v.d != meta->dim)
        return deft_fail(DEFT_ERR_FORMAT, "checkpoint: its worker states "
                         "(%zu bytes, %s/%s, %llu parameters) do not match "
                         "its header (%s/%s, %llu parameters)", state_size,
                         deft_algo_name((deft_algo_t)v.algo),
                         deft_compressor_name((deft_compressor_kind_t)v.compressor),
                         (unsigned long long)v.d,
                         deft_algo_name((deft_algo_t)meta->algo),
                         deft_compressor_name((deft_compressor_kind_t)meta->compressor),
                         (unsigned long long)meta->dim);
    char *o = malloc(state_size * (size_t)k_out);
    if (!o)
        return deft_fail(DEFT_ERR_NOMEM, "no memory to re-shard a checkpoint "
                         "to %d workers", k_out);
    st = deft_state_reshard(states, state_size, optim_size, (int)meta->workers,
                            o, state_size, k_out, mode);
    if (st == DEFT_OK)
        deft_reshard_mean_f32((const char *)states + optim_size, state_size,
                              (int)meta->workers, o + optim_size, state_size,
                              k_out, (state_size - optim_size) / sizeof(float));
    if (st != DEFT_OK) {
        free(o);
        return st;
    }
    meta->workers = (uint32_t)k_out;
    meta->optim_bytes = optim_size;
    *out = o;
    return DEFT_OK;
}

deft_status_t deft_checkpoint_reshard(const char *in_path, const char *out_path,
                                      int k_out, deft_reshard_t mode,
                                      deft_ckpt_meta_t *from)
{
    deft_ckpt_meta_t meta;
    void *states = NULL, *out = NULL;
    size_t ssz = 0;
    deft_status_t st = deft_checkpoint_read(in_path, &meta, &states, &ssz);
    if (st == DEFT_OK && from)
        *from = meta;
    if (st == DEFT_OK)
        st = deft_checkpoint_reshard_states(&meta, states, ssz, k_out, mode, &out);
    if (st == DEFT_OK)
        st = deft_checkpoint_write(out_path, &meta, out, ssz);
    free(states);
    free(out);
    return st;
}
