/* Shared internals of libdeft: error reporting and small helpers. Not part
 * of the public API; only library sources and the project's own tests and
 * benchmarks include it. */
#ifndef DEFT_INTERNAL_H
#define DEFT_INTERNAL_H

#include "deft.h"

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#if defined(__GNUC__)
#define DEFT_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define DEFT_LIKELY(x) __builtin_expect(!!(x), 1)
#define DEFT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define DEFT_PRINTF(a, b)
#define DEFT_LIKELY(x) (x)
#define DEFT_UNLIKELY(x) (x)
#endif

/* Records a message for deft_last_error() on this thread and returns
 * status, so that callers can write `return deft_fail(...)`. */
deft_status_t deft_fail(deft_status_t status, const char *fmt, ...)
    DEFT_PRINTF(2, 3);

/* Replaces this thread's last error text (used to hand a worker thread's
 * message to the thread that joined it). */
void deft_set_last_error_text(const char *text);

/* Clears the last error of this thread. */
void deft_clear_error(void);

/* Cache-line aligned, zeroed allocation of n bytes (n may be 0); NULL on
 * failure. Free with deft_free. */
void *deft_alloc(size_t n);
void deft_free(void *p);

/* Seconds of a monotonic wall clock, and CPU seconds of the calling
 * thread (both from clock_gettime; only differences are meaningful). */
double deft_wall_s(void);
double deft_thread_cpu_s(void);

/* CRC-32 (zlib's polynomial) of p[0..n), continuing from crc (0 to
 * start), for any n. */
uint32_t deft_crc32(uint32_t crc, const void *p, size_t n);

/* 1 if x is NaN or +-Inf. */
static inline int deft_nonfinite_f32(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7f800000u) == 0x7f800000u;
}

/* Non-finite detection inside fused loops: fold each value's exponent field
 * (bits & 0x7f800000) into a running integer max, which ends equal to
 * DEFT_EXP_NONFINITE exactly when some value was NaN or Inf. An integer max
 * is associative, so the compiler vectorizes the loop; a float test would
 * not be. */
#define DEFT_EXP_NONFINITE 0x7f800000u
static inline uint32_t deft_exp_fold(uint32_t m, float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u &= 0x7f800000u;
    return u > m ? u : m;
}

/* The fold over v[0..n). */
static inline uint32_t deft_exp_max_f32(const float *v, size_t n)
{
    uint32_t m = 0;
    for (size_t i = 0; i < n; i++)
        m = deft_exp_fold(m, v[i]);
    return m;
}

#endif
