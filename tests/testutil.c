#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/rng.h"

#include <zlib.h>

void deft_test_assert_close(double got, double want, double rtol, double atol,
                            const char *expr, const char *file, int line)
{
    double tol = rtol * fmax(fabs(want), 1e-30) + atol;
    if (!(fabs(got - want) <= tol)) {
        print_error("%s = %.9g, want %.9g (|diff| %.3g > tol %.3g)\n", expr,
                    got, want, fabs(got - want), tol);
        _fail(file, line);
    }
}

void deft_test_assert_status(deft_status_t got, deft_status_t want,
                             const char *expr, const char *file, int line)
{
    if (got != want) {
        print_error("%s returned %d (%s), want %d (%s); last error: %s\n", expr,
                    (int)got, deft_status_str(got), (int)want,
                    deft_status_str(want), deft_last_error());
        _fail(file, line);
    }
}

void deft_test_assert_error_mentions(const char *needle, const char *file,
                                     int line)
{
    const char *msg = deft_last_error();
    if (!strstr(msg, needle)) {
        print_error("deft_last_error() = \"%s\" does not mention \"%s\"\n", msg,
                    needle);
        _fail(file, line);
    }
}

double deft_test_max_rel_diff(const float *a, const float *b, size_t n,
                              double floor)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) /
                   fmax(fabs((double)b[i]), floor);
        if (d > m || isnan(d))
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

void deft_test_fill(float *v, size_t n, uint64_t seed)
{
    deft_rng_t r = deft_rng_make(seed, 0, 0, DEFT_STREAM_TEST);
    for (size_t i = 0; i < n; i++)
        v[i] = 2.0f * deft_rng_uniform(&r) - 1.0f;
}

void deft_test_write_file(const char *path, const void *data, size_t len,
                          int gz)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        if (len)
            assert_int_equal(gzwrite(f, data, (unsigned)len), (int)len);
        assert_int_equal(gzclose(f), Z_OK);
        return;
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}
