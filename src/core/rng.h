/* Counter-based random numbers. A stream is keyed by (seed, step, tensor,
 * purpose); value i of a stream is a fixed function of the key and i, so
 * every worker that builds the same key draws the same numbers without
 * communicating and without shared mutable state. The mixing function is
 * SplitMix64's finalizer over a Weyl sequence (a bijection of the counter),
 * which passes BigCrush. */
#ifndef DEFT_RNG_H
#define DEFT_RNG_H

#include <stdint.h>

/* What a stream is used for: part of the key, so that two uses with the
 * same (seed, step, tensor) never share numbers. Worker-private streams add
 * the rank to the purpose (DEFT_STREAM_PRIVATE(purpose, rank)). */
enum {
    DEFT_STREAM_RBGS = 1,
    DEFT_STREAM_RANDK = 2,
    DEFT_STREAM_QSGD = 3,
    DEFT_STREAM_ECLK_COIN = 4,
    DEFT_STREAM_DATA = 5,
    DEFT_STREAM_INIT = 6,
    DEFT_STREAM_POWERSGD = 7,
    DEFT_STREAM_TEST = 99
};
#define DEFT_STREAM_PRIVATE(purpose, rank) \
    ((uint64_t)(purpose) | ((uint64_t)(rank) + 1) << 32)

typedef struct {
    uint64_t key;
    uint64_t ctr;
} deft_rng_t;

static inline uint64_t deft_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline deft_rng_t deft_rng_make(uint64_t seed, uint64_t step,
                                       uint64_t tensor, uint64_t purpose)
{
    uint64_t k = deft_mix64(seed + 0x9e3779b97f4a7c15ull);
    k = deft_mix64(k ^ (step + 0x632be59bd9b4e019ull));
    k = deft_mix64(k ^ (tensor + 0x85157af5ull));
    k = deft_mix64(k ^ purpose);
    deft_rng_t r = {k, 0};
    return r;
}

static inline uint64_t deft_rng_u64(deft_rng_t *r)
{
    r->ctr++;
    return deft_mix64(r->key + r->ctr * 0x9e3779b97f4a7c15ull);
}

/* Uniform in [0, n), n >= 1, without modulo bias (Lemire's method). */
static inline uint64_t deft_rng_below(deft_rng_t *r, uint64_t n)
{
    for (;;) {
        uint64_t x = deft_rng_u64(r);
        unsigned __int128 m = (unsigned __int128)x * n;
        uint64_t lo = (uint64_t)m;
        if (lo >= n || lo >= (uint64_t)(-n) % n)
            return (uint64_t)(m >> 64);
    }
}

/* Uniform float in [0, 1) with 24 random bits. */
static inline float deft_rng_uniform(deft_rng_t *r)
{
    return (float)(deft_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

/* Uniform double in [0, 1) with 53 random bits. */
static inline double deft_rng_uniform_f64(deft_rng_t *r)
{
    return (double)(deft_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

#endif
