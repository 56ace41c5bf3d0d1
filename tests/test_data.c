/* Data readers, sampler and augmentation: correct reads of small IDX and
 * LIBSVM files written here (raw and gzip), a clean error naming the file
 * for every kind of malformed input, the sampler's sharding contract, and
 * the real Fashion-MNIST set (a required dependency). */
#include "testutil.h"

#include "core/internal.h"
#include "data/data.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[64];

/* ---- files ------------------------------------------------------------- */

static void tpath(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", tmpdir, name);
}

static void write_raw(const char *name, const void *data, size_t len)
{
    char p[256];
    tpath(p, sizeof p, name);
    deft_test_write_file(p, data, len, 0);
}

static void write_gz(const char *name, const void *data, size_t len)
{
    char p[256];
    tpath(p, sizeof p, name);
    deft_test_write_file(p, data, len, 1);
}

static void write_text(const char *name, const char *text)
{
    write_raw(name, text, strlen(text));
}

/* Reads a whole file written here; *len receives its size. */
static unsigned char *read_back(const char *name, size_t *len)
{
    char p[256];
    tpath(p, sizeof p, name);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    *len = (size_t)size;
    return buf;
}

static void put_be32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24), b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8), b[3] = (unsigned char)v;
}

/* An IDX image file: header (magic, n, rows, cols) then n*rows*cols bytes
 * of body (pixel p = (seed + 37 p) mod 256). */
static unsigned char *idx_images(uint32_t magic, uint32_t n, uint32_t rows,
                                 uint32_t cols, size_t body, uint32_t seed,
                                 size_t *len)
{
    *len = 16 + body;
    unsigned char *b = malloc(*len);
    assert_non_null(b);
    put_be32(b, magic), put_be32(b + 4, n), put_be32(b + 8, rows);
    put_be32(b + 12, cols);
    for (size_t i = 0; i < body; i++)
        b[16 + i] = (unsigned char)(seed + 37 * i);
    return b;
}

static unsigned char *idx_labels(uint32_t magic, uint32_t n,
                                 const unsigned char *lab, size_t nlab,
                                 size_t *len)
{
    *len = 8 + nlab;
    unsigned char *b = malloc(*len);
    assert_non_null(b);
    put_be32(b, magic), put_be32(b + 4, n);
    memcpy(b + 8, lab, nlab);
    return b;
}

/* Pixels that gzip cannot shrink much, so a .gz can be cut in the middle
 * of its compressed data. */
static unsigned char *noise_images(uint32_t n, size_t *len)
{
    unsigned char *b = idx_images(0x803, n, 28, 28, (size_t)n * 784, 0, len);
    uint64_t z = 88172645463325252ull;
    for (size_t i = 16; i < *len; i++) {
        z ^= z << 13, z ^= z >> 7, z ^= z << 17;
        b[i] = (unsigned char)(z >> 32);
    }
    return b;
}

/* ---- fixtures ---------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/deft-test-data-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown(void **state)
{
    (void)state;
    remove_tree(tmpdir);
    return 0;
}

static void assert_empty(const deft_dataset_t *ds)
{
    assert_int_equal(ds->n, 0);
    assert_null(ds->x);
    assert_null(ds->y);
}

/* ---- IDX --------------------------------------------------------------- */

static void test_idx_reads_raw_and_gzip(void **state)
{
    (void)state;
    const uint32_t n = 3, rows = 4, cols = 5;
    const unsigned char lab[3] = {0, 9, 5};
    size_t li, ll;
    unsigned char *img = idx_images(0x803, n, rows, cols, n * rows * cols, 3, &li);
    unsigned char *lb = idx_labels(0x801, n, lab, n, &ll);
    write_raw("ok-img", img, li);
    write_raw("ok-lab", lb, ll);
    write_gz("ok-img.gz", img, li);
    write_gz("ok-lab.gz", lb, ll);

    const char *pairs[][2] = {{"ok-img", "ok-lab"},
                              {"ok-img.gz", "ok-lab.gz"},
                              {"ok-img.gz", "ok-lab"},
                              {"ok-img", "ok-lab.gz"}};
    for (size_t t = 0; t < sizeof pairs / sizeof pairs[0]; t++) {
        char pi[256], pl[256];
        tpath(pi, sizeof pi, pairs[t][0]);
        tpath(pl, sizeof pl, pairs[t][1]);
        deft_dataset_t ds;
        assert_status(deft_dataset_load_idx(&ds, pi, pl), DEFT_OK);
        assert_int_equal(ds.n, n);
        assert_int_equal(ds.c, 1);
        assert_int_equal(ds.h, rows);
        assert_int_equal(ds.w, cols);
        assert_int_equal(ds.n_classes, 10);
        for (size_t i = 0; i < n * rows * cols; i++)
            assert_true(ds.x[i] == (float)img[16 + i] / 255.0f);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(ds.y[i], lab[i]);
        deft_dataset_free(&ds);
        assert_empty(&ds);
    }
    deft_dataset_free(NULL);
    free(img);
    free(lb);
}

typedef struct {
    const char *what;
    deft_status_t want;
    const char *needle;  /* besides the file name                          */
    const char *blame;   /* file the message must name; NULL = images      */
} idx_case_t;

static void expect_idx(const char *images, const char *labels,
                       deft_status_t want, const char *blame,
                       const char *needle, const char *what)
{
    char pi[256], pl[256];
    tpath(pi, sizeof pi, images);
    tpath(pl, sizeof pl, labels);
    deft_dataset_t ds;
    memset(&ds, 0xab, sizeof ds);
    deft_status_t st = deft_dataset_load_idx(&ds, pi, pl);
    const char *msg = deft_last_error();
    if (st != want || !strstr(msg, blame) || !strstr(msg, needle))
        fail_msg("%s: got %s \"%s\", want %s mentioning \"%s\" and \"%s\"",
                 what, deft_status_str(st), msg, deft_status_str(want), blame,
                 needle);
    if (want == DEFT_OK)
        deft_dataset_free(&ds);
    assert_empty(&ds);
}

static void test_idx_rejects_malformed(void **state)
{
    (void)state;
    const unsigned char lab5[5] = {1, 2, 3, 4, 0};
    unsigned char bad_lab[5] = {1, 12, 3, 4, 0};
    size_t len, llen;
    unsigned char *b;

    /* A good pair to combine with each broken file. */
    b = idx_images(0x803, 5, 3, 3, 45, 1, &len);
    write_raw("img", b, len);
    write_gz("img.gz", b, len);
    write_raw("img-short", b, len - 5);
    write_gz("img-short.gz", b, len - 5);
    write_raw("img-hdr", b, 10);
    write_gz("img-hdr.gz", b, 10);
    write_raw("img-empty", b, 0);
    free(b);
    b = idx_labels(0x801, 5, lab5, 5, &llen);
    write_raw("lab", b, llen);
    write_raw("lab-hdr", b, 6);
    write_raw("lab-short", b, llen - 1);
    free(b);

    b = idx_images(0x801, 5, 3, 3, 45, 1, &len);
    write_raw("img-magic", b, len);
    free(b);
    b = idx_images(0x804, 5, 3, 3, 45, 1, &len);
    write_raw("img-4d", b, len);
    free(b);
    b = idx_labels(0x803, 5, lab5, 5, &llen);
    write_raw("lab-magic", b, llen);
    free(b);
    b = idx_labels(0x801, 4, lab5, 4, &llen);
    write_gz("lab-4.gz", b, llen);
    free(b);
    b = idx_labels(0x801, 5, bad_lab, 5, &llen);
    write_raw("lab-range", b, llen);
    free(b);
    b = idx_images(0x803, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 45, 1, &len);
    write_raw("img-overflow", b, len);
    free(b);
    /* A header that claims 13 TB must fail on the short body, not allocate. */
    b = idx_images(0x803, 0xFFFFFFFFu, 28, 28, 45, 1, &len);
    write_raw("img-huge", b, len);
    free(b);
    b = idx_labels(0x801, 0xFFFFFFFFu, lab5, 5, &llen);
    write_raw("lab-huge", b, llen);
    free(b);
    b = idx_images(0x803, 0, 3, 3, 0, 1, &len);
    write_raw("img-zero", b, len);
    free(b);
    b = idx_images(0x803, 5, 0, 3, 0, 1, &len);
    write_raw("img-zero-rows", b, len);
    free(b);
    b = idx_labels(0x801, 0, lab5, 0, &llen);
    write_raw("lab-zero", b, llen);
    free(b);

    /* Corrupt gzip streams: cut in the middle, cut before the trailer,
     * bytes flipped in the middle of the compressed data. */
    b = noise_images(50, &len);
    write_gz("noise.gz", b, len);
    free(b);
    unsigned char lab50[50] = {0};
    b = idx_labels(0x801, 50, lab50, 50, &llen);
    write_raw("lab50", b, llen);
    free(b);
    size_t glen;
    unsigned char *gz = read_back("noise.gz", &glen);
    assert_true(glen > 20000);
    write_raw("noise-half.gz", gz, glen / 2);
    write_raw("noise-notrailer.gz", gz, glen - 4);
    for (size_t i = glen / 2; i < glen / 2 + 8; i++)
        gz[i] ^= 0x5a;
    write_raw("noise-flip.gz", gz, glen);
    free(gz);
    char dir[256];
    tpath(dir, sizeof dir, "a-directory");
    assert_int_equal(mkdir(dir, 0700), 0);

    expect_idx("noise.gz", "lab50", DEFT_OK, "", "", "good noise file");
    expect_idx("img-magic", "lab", DEFT_ERR_FORMAT, "img-magic",
               "wrong magic 0x00000801 (expected 0x00000803", "image magic");
    expect_idx("img-4d", "lab", DEFT_ERR_FORMAT, "img-4d", "magic", "4 dims");
    expect_idx("img", "lab-magic", DEFT_ERR_FORMAT, "lab-magic",
               "expected 0x00000801", "label magic");
    expect_idx("img-hdr", "lab", DEFT_ERR_FORMAT, "img-hdr", "truncated",
               "short image header");
    expect_idx("img-hdr.gz", "lab", DEFT_ERR_FORMAT, "img-hdr.gz", "truncated",
               "short gz image header");
    expect_idx("img-empty", "lab", DEFT_ERR_FORMAT, "img-empty", "truncated",
               "empty image file");
    expect_idx("img", "lab-hdr", DEFT_ERR_FORMAT, "lab-hdr", "truncated",
               "short label header");
    expect_idx("img-short", "lab", DEFT_ERR_FORMAT, "img-short",
               "expected 45 bytes of pixels, got 40", "short raw body");
    expect_idx("img-short.gz", "lab", DEFT_ERR_FORMAT, "img-short.gz",
               "expected 45 bytes of pixels, got 40", "short gz body");
    expect_idx("img", "lab-short", DEFT_ERR_FORMAT, "lab-short", "truncated",
               "short label body");
    expect_idx("noise-half.gz", "lab50", DEFT_ERR_FORMAT, "noise-half.gz", "",
               "gz cut in half");
    expect_idx("noise-notrailer.gz", "lab50", DEFT_ERR_FORMAT,
               "noise-notrailer.gz", "gzip", "gz without trailer");
    expect_idx("noise-flip.gz", "lab50", DEFT_ERR_FORMAT, "noise-flip.gz", "",
               "gz with flipped bytes");
    expect_idx("img.gz", "lab-4.gz", DEFT_ERR_FORMAT,
               "has 5 images but labels file", "lab-4.gz has 4 labels",
               "count mismatch");
    expect_idx("img", "lab-range", DEFT_ERR_FORMAT, "lab-range",
               "label 12 at index 1 is out of range [0, 10)", "label range");
    expect_idx("img-overflow", "lab", DEFT_ERR_FORMAT, "img-overflow",
               "dimensions 4294967295 x 4294967295 x 4294967295 overflow",
               "overflow");
    expect_idx("img-huge", "lab-huge", DEFT_ERR_FORMAT, "", "truncated",
               "huge claimed size");
    expect_idx("img-zero", "lab-zero", DEFT_ERR_FORMAT, "img-zero", "zero",
               "zero count");
    expect_idx("img-zero-rows", "lab", DEFT_ERR_FORMAT, "img-zero-rows",
               "zero", "zero rows");
    expect_idx("no-such-file", "lab", DEFT_ERR_IO, "no-such-file",
               "No such file", "missing images");
    expect_idx("img", "no-such-labels", DEFT_ERR_IO, "no-such-labels",
               "No such file", "missing labels");
    expect_idx("a-directory", "lab", DEFT_ERR_IO, "a-directory", "",
               "directory");

    deft_dataset_t ds;
    assert_status(deft_dataset_load_idx(&ds, NULL, "x"), DEFT_ERR_INVALID_ARG);
    assert_status(deft_dataset_load_idx(NULL, "x", "y"), DEFT_ERR_INVALID_ARG);
}

static void test_mnist_dir(void **state)
{
    (void)state;
    char dir[256], p[256];
    tpath(dir, sizeof dir, "mnist");
    assert_int_equal(mkdir(dir, 0700), 0);
    const unsigned char lab[4] = {7, 0, 1, 9};
    size_t len;
    unsigned char *b = idx_images(0x803, 4, 2, 3, 24, 9, &len);
    write_gz("mnist/train-images-idx3-ubyte.gz", b, len);
    free(b);
    b = idx_images(0x803, 2, 2, 3, 12, 9, &len);
    write_raw("mnist/t10k-images-idx3-ubyte", b, len);
    free(b);
    b = idx_labels(0x801, 4, lab, 4, &len);
    write_raw("mnist/train-labels-idx1-ubyte", b, len);
    free(b);
    b = idx_labels(0x801, 2, lab, 2, &len);
    write_gz("mnist/t10k-labels-idx1-ubyte.gz", b, len);
    /* The .gz name wins over the plain one. */
    write_text("mnist/t10k-labels-idx1-ubyte", "garbage");
    free(b);

    deft_dataset_t train, test;
    assert_status(deft_dataset_load_mnist_dir(&train, &test, dir), DEFT_OK);
    assert_int_equal(train.n, 4);
    assert_int_equal(test.n, 2);
    assert_int_equal(train.h, 2);
    assert_int_equal(train.w, 3);
    assert_int_equal(train.y[0], 7);
    assert_int_equal(test.y[1], 0);
    deft_dataset_free(&train);
    deft_dataset_free(&test);

    tpath(p, sizeof p, "no-such-dir");
    assert_status(deft_dataset_load_mnist_dir(&train, &test, p), DEFT_ERR_IO);
    assert_error_mentions("no-such-dir");
    assert_error_mentions("install Debian's dataset-fashion-mnist or pass "
                          "--data-dir");
    assert_empty(&train);

    tpath(p, sizeof p, "mnist/train-labels-idx1-ubyte");
    unlink(p);
    assert_status(deft_dataset_load_mnist_dir(&train, &test, dir), DEFT_ERR_IO);
    assert_error_mentions("train-labels-idx1-ubyte");
    assert_empty(&train);
    assert_empty(&test);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_real_fashion_mnist(void **state)
{
    (void)state;
    struct stat sb;
    if (stat(DEFT_FASHION_MNIST_DIR, &sb) != 0)
        fail_msg("%s is missing: the Fashion-MNIST data set is a required "
                 "dependency; run scripts/install-deps.sh (Debian package "
                 "dataset-fashion-mnist)",
                 DEFT_FASHION_MNIST_DIR);
    deft_dataset_t train, test;
    double t0 = now_ms();
    if (deft_dataset_load_mnist_dir(&train, &test, NULL) != DEFT_OK)
        fail_msg("%s; run scripts/install-deps.sh (Debian package "
                 "dataset-fashion-mnist)",
                 deft_last_error());
    double t1 = now_ms();
    print_message("loaded Fashion-MNIST train+test in %.0f ms\n", t1 - t0);

    const deft_dataset_t *sets[2] = {&train, &test};
    const size_t want_n[2] = {60000, 10000};
    for (int s = 0; s < 2; s++) {
        const deft_dataset_t *ds = sets[s];
        assert_int_equal(ds->n, want_n[s]);
        assert_int_equal(ds->c, 1);
        assert_int_equal(ds->h, 28);
        assert_int_equal(ds->w, 28);
        assert_int_equal(ds->n_classes, 10);
        size_t hist[10] = {0};
        for (size_t i = 0; i < ds->n; i++)
            hist[ds->y[i]]++;
        for (int c = 0; c < 10; c++)
            assert_int_equal(hist[c], want_n[s] / 10);
        float lo = 1, hi = 0;
        for (size_t i = 0; i < ds->n * 784; i++) {
            lo = ds->x[i] < lo ? ds->x[i] : lo;
            hi = ds->x[i] > hi ? ds->x[i] : hi;
        }
        assert_true(lo == 0.0f && hi == 1.0f);
    }
    deft_dataset_free(&train);
    deft_dataset_free(&test);
}

/* ---- LIBSVM ------------------------------------------------------------ */

static void load_svm(deft_dataset_t *ds, const char *name, int features)
{
    char p[256];
    tpath(p, sizeof p, name);
    assert_status(deft_dataset_load_libsvm(ds, p, features), DEFT_OK);
}

static int restore_data_limit(void **state)
{
    (void)state;
    deft_data_set_max_bytes(0);
    return 0;
}

/* Memory stays bounded by what a file holds (data.h): a gzip bomb and a
 * header claiming more than the limit are refused naming the limit (here
 * lowered to 1 MiB), and a 30-byte LIBSVM file naming feature 900000000 is
 * refused instead of allocating 7 GB of dense rows. */
static void test_memory_is_bounded_by_the_file(void **state)
{
    (void)state;
    size_t old = deft_data_set_max_bytes((size_t)1 << 20);
    size_t len, llen;
    /* Claims 60000 x 28 x 28 (47 MB) in a tiny gzip file. */
    unsigned char *b = idx_images(0x803, 60000, 28, 28, 100, 1, &len);
    write_gz("claims-47mb.gz", b, len);
    free(b);
    const unsigned char lab5[5] = {1, 2, 3, 4, 0};
    unsigned char *lab60k = calloc(60000, 1);
    assert_non_null(lab60k);
    unsigned char *l = idx_labels(0x801, 60000, lab60k, 60000, &llen);
    write_raw("lab-60000", l, llen);
    free(l);
    free(lab60k);
    expect_idx("claims-47mb.gz", "lab-60000", DEFT_ERR_FORMAT, "",
               "the reader's limit of 1048576 decompressed bytes",
               "header over the limit");
    /* A valid 5-image file followed by 8 MiB of zeros, gzip'ed to a few
     * KB: read up to the limit, then refused. */
    b = idx_images(0x803, 5, 3, 3, 45, 1, &len);
    size_t bomb = len + ((size_t)8 << 20);
    unsigned char *big = calloc(bomb, 1);
    assert_non_null(big);
    memcpy(big, b, len);
    write_gz("bomb.gz", big, bomb);
    free(big);
    free(b);
    l = idx_labels(0x801, 5, lab5, 5, &llen);
    write_raw("lab5", l, llen);
    free(l);
    char p[256];
    tpath(p, sizeof p, "bomb.gz");
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_true(sb.st_size < 64 * 1024); /* it is a bomb */
    expect_idx("bomb.gz", "lab5", DEFT_ERR_FORMAT, "bomb.gz",
               "more than 1048576 decompressed bytes", "gzip bomb");
    /* LIBSVM: a gzip'ed stream over the limit. */
    size_t n = (size_t)2 << 20, at = 0;
    char *text = malloc(n + 16);
    assert_non_null(text);
    while (at + 8 < n)
        at += (size_t)sprintf(text + at, "1 1:1\n");
    write_gz("svm-bomb.gz", text, at);
    free(text);
    deft_dataset_t ds;
    tpath(p, sizeof p, "svm-bomb.gz");
    assert_status(deft_dataset_load_libsvm(&ds, p, 0), DEFT_ERR_FORMAT);
    assert_error_mentions("more than 1048576 bytes once decompressed");
    /* One endless line (no newline at all): refused before the line
     * buffer outgrows the limit. */
    char *line = malloc((size_t)4 << 20);
    assert_non_null(line);
    memset(line, '1', (size_t)4 << 20);
    line[1] = ' ';
    write_gz("svm-line-bomb.gz", line, (size_t)4 << 20);
    free(line);
    tpath(p, sizeof p, "svm-line-bomb.gz");
    assert_status(deft_dataset_load_libsvm(&ds, p, 0), DEFT_ERR_FORMAT);
    assert_error_mentions("a line longer than 1048576 bytes");
    deft_data_set_max_bytes(old);
    assert_int_equal(deft_data_max_bytes(), DEFT_DATA_MAX_BYTES);
    (void)old;
    /* The 30-byte file. */
    write_text("sparse.svm", "1 3:1\n-1 900000000:2\n");
    tpath(p, sizeof p, "sparse.svm");
    assert_status(deft_dataset_load_libsvm(&ds, p, 0), DEFT_ERR_FORMAT);
    assert_error_mentions("2 examples x 900000000 features would take 7.2 GB");
    assert_null(ds.x);
}

static void test_libsvm_reads(void **state)
{
    (void)state;
    const char *bin = "# a comment line\n"
                      "+1 1:0.5 3:-2\r\n"
                      "-1 2:1e-3   \t\n"
                      "\n"
                      "+1\n"
                      "-1 4:7 # trailing comment\n";
    write_text("bin.svm", bin);
    write_gz("bin.svm.gz", bin, strlen(bin));
    const char *names[2] = {"bin.svm", "bin.svm.gz"};
    for (int t = 0; t < 2; t++) {
        deft_dataset_t ds;
        load_svm(&ds, names[t], 0);
        assert_int_equal(ds.n, 4);
        assert_int_equal(ds.c, 1);
        assert_int_equal(ds.h, 1);
        assert_int_equal(ds.w, 4);
        assert_int_equal(ds.n_classes, 2);
        const float want[16] = {0.5f, 0, -2, 0, 0, 1e-3f, 0, 0,
                                0,    0, 0,  0, 0, 0,     0, 7};
        const int32_t wy[4] = {1, 0, 1, 0};
        for (int i = 0; i < 16; i++)
            assert_true(ds.x[i] == want[i]);
        for (int i = 0; i < 4; i++)
            assert_int_equal(ds.y[i], wy[i]);
        deft_dataset_free(&ds);
    }

    /* Given features beyond the largest index; no final newline. */
    write_text("multi.svm", "1 1:1\n3 2:2\n2 1:3 2:4\n3 2:5");
    deft_dataset_t ds;
    load_svm(&ds, "multi.svm", 6);
    assert_int_equal(ds.n, 4);
    assert_int_equal(ds.w, 6);
    assert_int_equal(ds.n_classes, 3);
    const int32_t my[4] = {0, 2, 1, 2};
    for (int i = 0; i < 4; i++)
        assert_int_equal(ds.y[i], my[i]);
    assert_true(ds.x[6 * 2 + 0] == 3.0f && ds.x[6 * 2 + 1] == 4.0f);
    assert_true(ds.x[6 * 3 + 1] == 5.0f && ds.x[6 * 3 + 0] == 0.0f);
    deft_dataset_free(&ds);

    /* 0-based labels are kept; 0/1 is a pair. */
    write_text("zero.svm", "0 1:1\n3 1:1\n1 1:1\n");
    load_svm(&ds, "zero.svm", 0);
    assert_int_equal(ds.n_classes, 4);
    assert_int_equal(ds.y[1], 3);
    deft_dataset_free(&ds);
    write_text("pair.svm", "1 1:1\n0 1:1\n");
    load_svm(&ds, "pair.svm", 0);
    assert_int_equal(ds.n_classes, 2);
    assert_int_equal(ds.y[0], 1);
    assert_int_equal(ds.y[1], 0);
    deft_dataset_free(&ds);
}

static void test_libsvm_rejects_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *second_line;
        int features;
        const char *needle;
    } cases[] = {
        {"1 0:1", 0, "index 0"},
        {"1 3:1 2:1", 0, "index 2 after index 3"},
        {"1 3:1 3:2", 0, "index 3 after index 3"},
        {"1 3 1", 0, "missing ':'"},
        {"1 3=1", 0, "missing ':'"},
        {"1 2:abc", 0, "not a number"},
        {"1 2:1.5x", 0, "not a number"},
        {"1 2:", 0, "not a number"},
        {"1 2: 1", 0, "not a number"},
        {"1 2:nan", 0, "NaN"},
        {"1 2:inf", 0, "infinite"},
        {"1 2:1e300", 0, "float"},
        {"abc 1:2", 0, "bad label"},
        {"1:2 3:4", 0, "bad label"},
        {"1.5 1:2", 0, "not a class number"},
        {"1 -1:2", 0, "bad index"},
        {"1 :2", 0, "bad index"},
        {"1 x:2", 0, "bad index"},
        {"1 99999999999999999999:2", 0, "too large"},
        {"1 9:1", 8, "index 9 is beyond the 8 features"},
    };
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        char name[32], text[128], p[256], where[64];
        snprintf(name, sizeof name, "bad%zu.svm", t);
        snprintf(text, sizeof text, "1 1:1 2:2\n%s\n-1 1:3\n",
                 cases[t].second_line);
        write_text(name, text);
        tpath(p, sizeof p, name);
        snprintf(where, sizeof where, "%s:2", name);
        deft_dataset_t ds;
        deft_status_t st = deft_dataset_load_libsvm(&ds, p, cases[t].features);
        const char *msg = deft_last_error();
        if (st != DEFT_ERR_FORMAT || !strstr(msg, where) ||
            !strstr(msg, cases[t].needle))
            fail_msg("\"%s\": got %s \"%s\", want FORMAT mentioning \"%s\" "
                     "and \"%s\"",
                     cases[t].second_line, deft_status_str(st), msg, where,
                     cases[t].needle);
        assert_empty(&ds);
    }

    deft_dataset_t ds;
    char p[256];
    write_text("empty.svm", "");
    tpath(p, sizeof p, "empty.svm");
    assert_status(deft_dataset_load_libsvm(&ds, p, 0), DEFT_ERR_FORMAT);
    assert_error_mentions("empty.svm");
    write_text("comments.svm", "# nothing\n\n   \r\n");
    tpath(p, sizeof p, "comments.svm");
    assert_status(deft_dataset_load_libsvm(&ds, p, 0), DEFT_ERR_FORMAT);
    assert_error_mentions("comments.svm");
    write_text("nofeat.svm", "1\n-1\n");
    tpath(p, sizeof p, "nofeat.svm");
    assert_status(deft_dataset_load_libsvm(&ds, p, 0), DEFT_ERR_FORMAT);
    assert_error_mentions("nofeat.svm");
    write_text("neg3.svm", "-1 1:1\n0 1:1\n1 1:1\n");
    tpath(p, sizeof p, "neg3.svm");
    assert_status(deft_dataset_load_libsvm(&ds, p, 0), DEFT_ERR_FORMAT);
    assert_error_mentions("neg3.svm");
    tpath(p, sizeof p, "no-such.svm");
    assert_status(deft_dataset_load_libsvm(&ds, p, 0), DEFT_ERR_IO);
    assert_error_mentions("no-such.svm");
    assert_status(deft_dataset_load_libsvm(&ds, p, -1), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("features");

    /* A gzip-compressed file cut short. */
    char big[8192];
    size_t len = 0;
    for (int i = 0; len + 64 < sizeof big; i++)
        len += (size_t)snprintf(big + len, sizeof big - len,
                                "%d 1:%d 2:0.%d 7:%d\n", i % 2 ? 1 : -1,
                                i * 7919 % 1000, i * 104729 % 997, i);
    write_gz("cut.svm.gz", big, len);
    size_t glen;
    unsigned char *gz = read_back("cut.svm.gz", &glen);
    write_raw("cut-half.svm.gz", gz, glen / 2);
    free(gz);
    tpath(p, sizeof p, "cut-half.svm.gz");
    assert_status(deft_dataset_load_libsvm(&ds, p, 0), DEFT_ERR_FORMAT);
    assert_error_mentions("cut-half.svm.gz");
    assert_empty(&ds);
}

/* ---- sampler ----------------------------------------------------------- */

static void test_sampler_shards(void **state)
{
    (void)state;
    enum { N = 103, B = 12, K = 4, EPOCHS = 3 };
    const int b = B / K;
    deft_sampler_t one, w[K];
    assert_status(deft_sampler_init(&one, N, B, 1, 0, 42), DEFT_OK);
    for (int k = 0; k < K; k++)
        assert_status(deft_sampler_init(&w[k], N, B, K, k, 42), DEFT_OK);
    size_t spe = deft_sampler_steps_per_epoch(&one);
    assert_int_equal(spe, N / B);
    assert_int_equal(deft_sampler_steps_per_epoch(&w[0]), N / B);

    uint32_t prev_first[B] = {0};
    for (uint64_t e = 0; e < EPOCHS; e++) {
        int seen[N] = {0};
        for (size_t s = 0; s < spe; s++) {
            uint64_t step = e * spe + s;
            const uint32_t *g = deft_sampler_batch(&one, step);
            assert_non_null(g);
            for (int k = 0; k < K; k++) {
                const uint32_t *part = deft_sampler_batch(&w[k], step);
                assert_non_null(part);
                for (int j = 0; j < b; j++) {
                    assert_true(part[j] < N);
                    assert_int_equal(part[j], g[k * b + j]);
                    seen[part[j]]++;
                }
            }
            if (s == 0) {
                /* A new epoch draws a new permutation. */
                if (e > 0)
                    assert_memory_not_equal(prev_first, g, sizeof prev_first);
                memcpy(prev_first, g, sizeof prev_first);
            }
        }
        /* Disjoint parts covering the first spe*B positions of a
         * permutation of [0, N). */
        size_t covered = 0;
        for (int i = 0; i < N; i++) {
            assert_true(seen[i] <= 1);
            covered += (size_t)seen[i];
        }
        assert_int_equal(covered, spe * B);
        int in_perm[N] = {0};
        for (int i = 0; i < N; i++)
            in_perm[one.perm[i]]++;
        for (int i = 0; i < N; i++)
            assert_int_equal(in_perm[i], 1);
        for (size_t i = 0; i < spe * B; i++)
            assert_int_equal(seen[one.perm[i]], 1);
    }

    /* A batch depends on (seed, step) only, not on the calls before it. */
    deft_sampler_t again, other;
    assert_status(deft_sampler_init(&again, N, B, 1, 0, 42), DEFT_OK);
    assert_status(deft_sampler_init(&other, N, B, 1, 0, 43), DEFT_OK);
    const uint64_t order[] = {5 * spe + 2, 1, 9 * spe, 5 * spe + 2, 0};
    for (size_t t = 0; t < sizeof order / sizeof order[0]; t++) {
        uint32_t want[B];
        memcpy(want, deft_sampler_batch(&one, order[t]), sizeof want);
        assert_memory_equal(deft_sampler_batch(&again, order[t]), want,
                            sizeof want);
        assert_memory_not_equal(deft_sampler_batch(&other, order[t]), want,
                                sizeof want);
    }
    deft_sampler_free(&again);
    deft_sampler_free(&other);
    deft_sampler_free(&one);
    for (int k = 0; k < K; k++)
        deft_sampler_free(&w[k]);
    assert_null(one.perm);
    deft_sampler_free(NULL);
    assert_null(deft_sampler_batch(&one, 0));
}

static void expect_sampler(size_t n, int batch, int nworkers, int rank,
                           const char *needle)
{
    deft_sampler_t s;
    assert_status(deft_sampler_init(&s, n, batch, nworkers, rank, 1),
                  DEFT_ERR_INVALID_ARG);
    assert_error_mentions(needle);
    assert_null(s.perm);
}

static void test_sampler_rejects_bad_args(void **state)
{
    (void)state;
    expect_sampler(100, 0, 1, 0, "global_batch");
    expect_sampler(100, -4, 1, 0, "global_batch");
    expect_sampler(100, 8, 0, 0, "nworkers");
    expect_sampler(100, 8, 3, 0, "global_batch = 8 is not a multiple of "
                                 "nworkers = 3");
    expect_sampler(100, 101, 1, 0, "global_batch = 101");
    expect_sampler(100, 8, 4, 4, "rank");
    expect_sampler(100, 8, 4, -1, "rank");
    expect_sampler(0, 1, 1, 0, "n = 0");
    assert_status(deft_sampler_init(NULL, 10, 1, 1, 0, 1), DEFT_ERR_INVALID_ARG);
    deft_sampler_t s;
    assert_status(deft_sampler_init(&s, 100, 100, 4, 3, 1), DEFT_OK);
    assert_int_equal(deft_sampler_steps_per_epoch(&s), 1);
    deft_sampler_free(&s);
}

/* ---- gather, standardize, filter --------------------------------------- */

enum { GN = 6, GC = 2, GH = 5, GW = 7 };

static void make_images(deft_dataset_t *ds)
{
    ds->n = GN, ds->c = GC, ds->h = GH, ds->w = GW, ds->n_classes = 10;
    ds->x = deft_alloc(GN * GC * GH * GW * sizeof(float));
    ds->y = deft_alloc(GN * sizeof(int32_t));
    assert_non_null(ds->x);
    assert_non_null(ds->y);
    /* Distinct, nonzero values: a 0 can only come from the padding. */
    for (int i = 0; i < GN * GC * GH * GW; i++)
        ds->x[i] = 1.0f + (float)i;
    for (int i = 0; i < GN; i++)
        ds->y[i] = (i * 3) % 10;
}

/* Which of the 25 shifts x 2 flips turns src into out; -1 if none. */
static int which_transform(const float *src, const float *out)
{
    for (int t = 0; t < 50; t++) {
        int dy = t / 10 - 2, dx = t / 2 % 5 - 2, flip = t % 2, ok = 1;
        for (int c = 0; c < GC && ok; c++)
            for (int r = 0; r < GH && ok; r++)
                for (int col = 0; col < GW && ok; col++) {
                    int sr = r + dy, sc = (flip ? GW - 1 - col : col) + dx;
                    float want = sr >= 0 && sr < GH && sc >= 0 && sc < GW
                                     ? src[(c * GH + sr) * GW + sc]
                                     : 0.0f;
                    ok = out[(c * GH + r) * GW + col] == want;
                }
        if (ok)
            return t;
    }
    return -1;
}

static void test_gather(void **state)
{
    (void)state;
    deft_dataset_t ds;
    make_images(&ds);
    const size_t row = GC * GH * GW;
    const uint32_t idx[4] = {5, 0, 3, 3};
    float x[4 * GC * GH * GW], x2[4 * GC * GH * GW];
    int32_t y[4];

    deft_dataset_gather(&ds, idx, 4, 0, 7, 11, 0, x, y);
    for (int i = 0; i < 4; i++) {
        assert_memory_equal(x + i * row, ds.x + idx[i] * row,
                            row * sizeof(float));
        assert_int_equal(y[i], ds.y[idx[i]]);
    }

    deft_dataset_gather(&ds, idx, 4, 1, 7, 11, 0, x, y);
    deft_dataset_gather(&ds, idx, 4, 1, 7, 11, 0, x2, y);
    assert_memory_equal(x, x2, sizeof x);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(y[i], ds.y[idx[i]]);
        assert_true(which_transform(ds.x + idx[i] * row, x + i * row) >= 0);
    }

    /* Over many steps every shift and both flips occur, about equally. */
    int count[50] = {0}, differs = 0;
    for (uint64_t step = 0; step < 2000; step++) {
        deft_dataset_gather(&ds, idx, 1, 1, 7, step, 0, x2, y);
        int t = which_transform(ds.x + idx[0] * row, x2);
        assert_true(t >= 0);
        count[t]++;
        if (step != 11)
            differs |= memcmp(x2, x, row * sizeof(float)) != 0;
    }
    assert_true(differs);
    for (int t = 0; t < 50; t++)
        assert_in_range(count[t], 15, 70);
    deft_dataset_free(&ds);
}

static void test_standardize_and_filter(void **state)
{
    (void)state;
    deft_dataset_t a, b;
    make_images(&a);
    make_images(&b);
    deft_dataset_standardize(&a, &b);
    size_t m = GN * GC * GH * GW;
    double sum = 0, ss = 0;
    for (size_t i = 0; i < m; i++)
        sum += a.x[i], ss += (double)a.x[i] * a.x[i];
    assert_close(sum / m, 0.0, 0, 1e-5);
    assert_close(ss / m, 1.0, 1e-5, 0);
    assert_memory_equal(a.x, b.x, m * sizeof(float));
    deft_dataset_standardize(&a, NULL);

    /* Labels are 0 3 6 9 2 5: keep 6 and 0, in that order. */
    const int32_t keep[2] = {6, 0};
    float third[GC * GH * GW];
    memcpy(third, b.x + 2 * GC * GH * GW, sizeof third);
    assert_status(deft_dataset_filter_labels(&b, keep, 2), DEFT_OK);
    assert_int_equal(b.n, 2);
    assert_int_equal(b.n_classes, 2);
    assert_int_equal(b.y[0], 1);
    assert_int_equal(b.y[1], 0);
    assert_memory_equal(b.x + GC * GH * GW, third, sizeof third);

    const int32_t dup[2] = {1, 1}, out[1] = {2};
    assert_status(deft_dataset_filter_labels(&b, dup, 2), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("duplicate");
    assert_status(deft_dataset_filter_labels(&b, out, 1), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("keep[0] = 2");
    assert_status(deft_dataset_filter_labels(&b, keep, 0), DEFT_ERR_INVALID_ARG);
    assert_error_mentions("n_keep");
    deft_dataset_free(&a);
    deft_dataset_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_reads_raw_and_gzip),
        cmocka_unit_test(test_idx_rejects_malformed),
        cmocka_unit_test_teardown(test_memory_is_bounded_by_the_file,
                                  restore_data_limit),
        cmocka_unit_test(test_mnist_dir),
        cmocka_unit_test(test_real_fashion_mnist),
        cmocka_unit_test(test_libsvm_reads),
        cmocka_unit_test(test_libsvm_rejects_malformed),
        cmocka_unit_test(test_sampler_shards),
        cmocka_unit_test(test_sampler_rejects_bad_args),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_standardize_and_filter),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
