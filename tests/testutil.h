/* Helpers shared by the cmocka tests. */
#ifndef DEFT_TESTUTIL_H
#define DEFT_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "deft.h"

/* Fails the test, printing both values and the tolerance, unless
 * |got - want| <= rtol * max(|want|, 1e-30) + atol. */
#define assert_close(got, want, rtol, atol)                                  \
    deft_test_assert_close((double)(got), (double)(want), (rtol), (atol),    \
                           #got, __FILE__, __LINE__)
void deft_test_assert_close(double got, double want, double rtol, double atol,
                            const char *expr, const char *file, int line);

/* Fails unless status == want, printing both names and deft_last_error(). */
#define assert_status(status, want)                                          \
    deft_test_assert_status((status), (want), #status, __FILE__, __LINE__)
void deft_test_assert_status(deft_status_t got, deft_status_t want,
                             const char *expr, const char *file, int line);

/* Fails unless deft_last_error() contains needle. */
#define assert_error_mentions(needle)                                        \
    deft_test_assert_error_mentions((needle), __FILE__, __LINE__)
void deft_test_assert_error_mentions(const char *needle, const char *file,
                                     int line);

/* Max over i of |a_i - b_i| / max(|b_i|, floor). */
double deft_test_max_rel_diff(const float *a, const float *b, size_t n,
                              double floor);

/* Writes len bytes to path, through gzip when gz; fails the test if any
 * step fails. */
void deft_test_write_file(const char *path, const void *data, size_t len,
                          int gz);

/* Fills v with deterministic pseudo-random values in [-1, 1). */
void deft_test_fill(float *v, size_t n, uint64_t seed);

#endif
