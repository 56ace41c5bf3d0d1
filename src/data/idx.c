/* IDX files (the MNIST / Fashion-MNIST layout), raw or gzip-compressed.
 *
 * Layout: a big-endian u32 magic 0x000008DD (0x08 = unsigned bytes, DD =
 * number of dimensions), DD big-endian u32 sizes, then the bytes. zlib's
 * gzread reads raw files unchanged, so one code path serves both. */
#include "data/data.h"

#include "core/internal.h"
#include "data/gz.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u
#define IDX_CLASSES 10

/* A header may claim any size. A raw file's claim is checked against its
 * size before anything is allocated; a gzip stream's body is read in
 * chunks that double from this size, so memory grows with what the stream
 * actually holds and a lying header fails as "truncated". */
#define IDX_FIRST_CHUNK ((size_t)1 << 20)

typedef struct {
    gzFile f;
    const char *path;
    const char *kind;  /* "image" or "label", for messages */
    int raw;           /* not gzip: the file's size bounds the body */
    uint64_t size;     /* the file's size in bytes */
    uint64_t consumed; /* decompressed bytes read so far */
} idx_file_t;

static deft_status_t idx_open(idx_file_t *file, const char *path,
                              const char *kind)
{
    file->path = path;
    file->kind = kind;
    errno = 0;
    file->f = gzopen(path, "rb");
    if (!file->f)
        return deft_fail(DEFT_ERR_IO, "%s: cannot open: %s", path,
                         errno ? strerror(errno) : "out of memory");
    gzbuffer(file->f, 1u << 17);
    struct stat sb;
    int known = stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
    file->size = known ? (uint64_t)sb.st_size : 0;
    file->raw = known && gzdirect(file->f);
    return DEFT_OK;
}

static void idx_close(idx_file_t *file)
{
    if (file->f)
        gzclose_r(file->f);
    file->f = NULL;
}

/* Reads up to n bytes; *got is how many arrived before the end of the
 * input. Fails only for read errors and corrupt gzip data; a short read is
 * the caller's to judge. */
static deft_status_t idx_read(idx_file_t *file, void *buf, size_t n,
                              size_t *got)
{
    unsigned char *p = buf;
    *got = 0;
    while (*got < n) {
        size_t want = n - *got;
        unsigned chunk = want > (1u << 30) ? (1u << 30) : (unsigned)want;
        errno = 0;
        int r = gzread(file->f, p + *got, chunk);
        if (r < 0) {
            int errnum;
            const char *msg = deft_gz_error(file->f, file->path, &errnum);
            if (errnum == Z_ERRNO)
                return deft_fail(DEFT_ERR_IO, "%s: read failed: %s",
                                 file->path, strerror(errno));
            return deft_fail(DEFT_ERR_FORMAT, "%s: corrupt gzip stream: %s",
                             file->path, msg);
        }
        if (r == 0)
            break;
        *got += (size_t)r;
        file->consumed += (uint64_t)r;
    }
    return DEFT_OK;
}

/* gzip's own report on a short read ("unexpected end of file") or "". */
static const char *idx_gz_note(idx_file_t *file)
{
    int errnum;
    const char *msg = deft_gz_error(file->f, file->path, &errnum);
    return errnum != Z_OK ? msg : "";
}

static deft_status_t idx_truncated(idx_file_t *file, const char *what,
                                   size_t want, size_t got)
{
    const char *note = idx_gz_note(file);
    return deft_fail(DEFT_ERR_FORMAT,
                     "%s: truncated: expected %zu bytes of %s, got %zu%s%s%s",
                     file->path, want, what, got, *note ? " (gzip: " : "",
                     note, *note ? ")" : "");
}

static uint32_t idx_be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 |
           (uint32_t)b[3];
}

/* Reads the magic and ndims sizes into dims. */
static deft_status_t idx_header(idx_file_t *file, uint32_t magic, int ndims,
                                uint32_t *dims)
{
    unsigned char b[16];
    size_t want = 4 + 4 * (size_t)ndims, got;
    deft_status_t st = idx_read(file, b, want, &got);
    if (st != DEFT_OK)
        return st;
    if (got >= 4 && idx_be32(b) != magic) {
        uint32_t m = idx_be32(b);
        const char *hint = "";
        if (m == IDX_MAGIC_LABELS && magic == IDX_MAGIC_IMAGES)
            hint = "; this looks like an IDX label file";
        else if (m == IDX_MAGIC_IMAGES && magic == IDX_MAGIC_LABELS)
            hint = "; this looks like an IDX image file";
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s: wrong magic 0x%08x (expected 0x%08x for an IDX "
                         "%s file%s)",
                         file->path, (unsigned)m, (unsigned)magic, file->kind,
                         hint);
    }
    if (got < want)
        return idx_truncated(file, "header", want, got);
    for (int i = 0; i < ndims; i++)
        dims[i] = idx_be32(b + 4 + 4 * i);
    return DEFT_OK;
}

/* A raw file must hold the n body bytes its header claims. */
static deft_status_t idx_fits(const idx_file_t *file, const char *what,
                              size_t n)
{
    if (file->raw && n > file->size - (file->consumed < file->size
                                           ? file->consumed : file->size))
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s: truncated: expected %zu bytes of %s, got %llu "
                         "(the file's size, checked before allocating)",
                         file->path, n, what,
                         (unsigned long long)(file->size > file->consumed
                                                  ? file->size - file->consumed
                                                  : 0));
    return DEFT_OK;
}

/* Reads exactly n body bytes into a new malloc'ed buffer, then reads on to
 * the end so that gzip verifies its checksum; trailing bytes are ignored.
 * The caller has checked idx_fits, so a raw file holds the n bytes. */
static deft_status_t idx_body(idx_file_t *file, const char *what, size_t n,
                              unsigned char **out)
{
    *out = NULL;
    size_t limit = deft_data_max_bytes();
    if (n > limit || file->consumed + n > limit)
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s: its header claims %zu bytes of %s, more than "
                         "the reader's limit of %zu decompressed bytes "
                         "(DEFT_DATA_MAX_BYTES)", file->path, n, what, limit);
    size_t cap = n < IDX_FIRST_CHUNK || file->raw ? n : IDX_FIRST_CHUNK, have = 0;
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!buf)
        return deft_fail(DEFT_ERR_NOMEM, "%s: cannot allocate %zu bytes",
                         file->path, cap);
    for (;;) {
        size_t got;
        deft_status_t st = idx_read(file, buf + have, cap - have, &got);
        if (st != DEFT_OK) {
            free(buf);
            return st;
        }
        have += got;
        if (have == n)
            break;
        if (have < cap) {
            st = idx_truncated(file, what, n, have);
            free(buf);
            return st;
        }
        size_t next = cap > n / 2 ? n : 2 * cap;
        unsigned char *grown = realloc(buf, next);
        if (!grown) {
            free(buf);
            return deft_fail(DEFT_ERR_NOMEM, "%s: cannot allocate %zu bytes",
                             file->path, next);
        }
        buf = grown, cap = next;
    }
    unsigned char rest[4096];
    size_t got;
    do {
        deft_status_t st = idx_read(file, rest, sizeof rest, &got);
        if (st == DEFT_OK && file->consumed > limit)
            st = deft_fail(DEFT_ERR_FORMAT,
                           "%s: more than %zu decompressed bytes (the reader's "
                           "limit, DEFT_DATA_MAX_BYTES) after the %s: refusing "
                           "what looks like a gzip bomb", file->path, limit,
                           what);
        if (st != DEFT_OK) {
            free(buf);
            return st;
        }
    } while (got == sizeof rest);
    const char *note = idx_gz_note(file);
    if (*note) {
        free(buf);
        return deft_fail(DEFT_ERR_FORMAT,
                         "%s: corrupt gzip stream after the %s: %s",
                         file->path, what, note);
    }
    *out = buf;
    return DEFT_OK;
}

deft_status_t deft_dataset_load_idx(deft_dataset_t *out, const char *images,
                                    const char *labels)
{
    if (!out)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_dataset_load_idx: out is NULL");
    memset(out, 0, sizeof *out);
    if (!images || !labels)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_dataset_load_idx: %s path is NULL",
                         images ? "labels" : "images");

    idx_file_t fi = {0}, fl = {0};
    unsigned char *pix = NULL, *lab = NULL;
    float *x = NULL;
    int32_t *y = NULL;
    uint32_t d[3] = {0, 0, 0}, nl = 0;
    deft_status_t st = idx_open(&fi, images, "image");
    if (st == DEFT_OK)
        st = idx_open(&fl, labels, "label");
    if (st == DEFT_OK)
        st = idx_header(&fi, IDX_MAGIC_IMAGES, 3, d);
    if (st == DEFT_OK)
        st = idx_header(&fl, IDX_MAGIC_LABELS, 1, &nl);
    if (st != DEFT_OK)
        goto done;

    if (d[0] == 0 || d[1] == 0 || d[2] == 0) {
        st = deft_fail(DEFT_ERR_FORMAT, "%s: zero size: %u images of %u x %u",
                       images, (unsigned)d[0], (unsigned)d[1], (unsigned)d[2]);
        goto done;
    }
    /* Sizes live in int (h, w) and size_t (bytes of floats). */
    size_t per = (size_t)d[1] * d[2];
    if (d[1] > INT_MAX || d[2] > INT_MAX || per > INT_MAX ||
        d[0] > SIZE_MAX / sizeof(float) / per) {
        st = deft_fail(DEFT_ERR_FORMAT, "%s: dimensions %u x %u x %u overflow",
                       images, (unsigned)d[0], (unsigned)d[1], (unsigned)d[2]);
        goto done;
    }
    if (nl != d[0]) {
        st = deft_fail(DEFT_ERR_FORMAT,
                       "images file %s has %u images but labels file %s has "
                       "%u labels",
                       images, (unsigned)d[0], labels, (unsigned)nl);
        goto done;
    }
    size_t n = d[0], total = n * per;

    /* Both raw claims are checked before either body is allocated. */
    if ((st = idx_fits(&fl, "labels", n)) != DEFT_OK ||
        (st = idx_fits(&fi, "pixels", total)) != DEFT_OK)
        goto done;
    st = idx_body(&fl, "labels", n, &lab);
    if (st != DEFT_OK)
        goto done;
    for (size_t i = 0; i < n; i++) {
        if (lab[i] >= IDX_CLASSES) {
            st = deft_fail(DEFT_ERR_FORMAT,
                           "%s: label %u at index %zu is out of range [0, %d)",
                           labels, (unsigned)lab[i], i, IDX_CLASSES);
            goto done;
        }
    }
    st = idx_body(&fi, "pixels", total, &pix);
    if (st != DEFT_OK)
        goto done;

    x = deft_alloc(total * sizeof *x);
    y = deft_alloc(n * sizeof *y);
    if (!x || !y) {
        st = deft_fail(DEFT_ERR_NOMEM, "%s: cannot allocate %zu floats",
                       images, total);
        goto done;
    }
    float lut[256];
    for (int v = 0; v < 256; v++)
        lut[v] = (float)v / 255.0f;
    for (size_t i = 0; i < total; i++)
        x[i] = lut[pix[i]];
    for (size_t i = 0; i < n; i++)
        y[i] = lab[i];

    out->n = n;
    out->c = 1;
    out->h = (int)d[1];
    out->w = (int)d[2];
    out->n_classes = IDX_CLASSES;
    out->x = x, x = NULL;
    out->y = y, y = NULL;

done:
    idx_close(&fi);
    idx_close(&fl);
    free(pix);
    free(lab);
    deft_free(x);
    deft_free(y);
    return st;
}

/* dir/name.gz if it exists, else dir/name. */
static deft_status_t mnist_path(char *buf, size_t size, const char *dir,
                                const char *name)
{
    struct stat sb;
    int len = snprintf(buf, size, "%s/%s.gz", dir, name);
    if (len < 0 || (size_t)len >= size)
        return deft_fail(DEFT_ERR_INVALID_ARG, "data directory path too long: %s",
                         dir);
    if (stat(buf, &sb) == 0)
        return DEFT_OK;
    snprintf(buf, size, "%s/%s", dir, name);
    if (stat(buf, &sb) == 0)
        return DEFT_OK;
    return deft_fail(DEFT_ERR_IO,
                     "%s: neither %s.gz nor %s found; install Debian's "
                     "dataset-fashion-mnist or pass --data-dir",
                     dir, name, name);
}

static deft_status_t mnist_load(deft_dataset_t *ds, const char *dir,
                                const char *prefix)
{
    char img[4096], lab[4096], name[64];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    deft_status_t st = mnist_path(img, sizeof img, dir, name);
    if (st != DEFT_OK)
        return st;
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    st = mnist_path(lab, sizeof lab, dir, name);
    if (st != DEFT_OK)
        return st;
    return deft_dataset_load_idx(ds, img, lab);
}

deft_status_t deft_dataset_load_mnist_dir(deft_dataset_t *train,
                                          deft_dataset_t *test,
                                          const char *dir)
{
    if (train)
        memset(train, 0, sizeof *train);
    if (test)
        memset(test, 0, sizeof *test);
    if (!train && !test)
        return deft_fail(DEFT_ERR_INVALID_ARG,
                         "deft_dataset_load_mnist_dir: train and test are NULL");
    if (!dir)
        dir = DEFT_FASHION_MNIST_DIR;
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return deft_fail(DEFT_ERR_IO,
                         "data directory %s: %s; install Debian's "
                         "dataset-fashion-mnist or pass --data-dir",
                         dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return deft_fail(DEFT_ERR_IO,
                         "data directory %s is not a directory; install "
                         "Debian's dataset-fashion-mnist or pass --data-dir",
                         dir);
    deft_status_t st = train ? mnist_load(train, dir, "train") : DEFT_OK;
    if (st == DEFT_OK && test)
        st = mnist_load(test, dir, "t10k");
    if (st != DEFT_OK) {
        deft_dataset_free(train);
        deft_dataset_free(test);
    }
    return st;
}
