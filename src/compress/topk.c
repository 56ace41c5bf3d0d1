/* topk: per segment the exact k = max(1, floor(n / ratio)) largest |v_i|,
 * ties broken by the lower index. Message: K = sum_t k_t uint32 global
 * indices, then K floats; each segment's entries in increasing index
 * order, segment after segment. The chosen coordinates' residual is 0.
 *
 * Selection works on keys = float bits & 0x7fffffff: for finite values the
 * order of the keys is the order of |v| (NaN keys sort above Inf, so a NaN
 * is always kept and shows up in msg_finite). Ways to a segment's k:
 *  - sampled (large segments with k <= n/8, the common case; about one
 *    pass over v): the threshold that ~1.6 k keys reach, estimated from a
 *    jittered strided sample; a compaction pass collects the candidates
 *    (index, key) at or above it; exact radix selection among them. If a
 *    heavily tied key makes the candidates overflow, a second pass takes
 *    the keys strictly above it and the first ties in index order fill up.
 *    When the sample misjudged, the radix path below takes over (counted
 *    as a fallback);
 *  - heap (k < 128 when not sampled): one scan keeping the k best in a
 *    min-heap, with a vectorized pre-check against the heap's minimum;
 *  - small (n <= 1024): quickselect over 64-bit keys key << 32 | ~index,
 *    which are distinct and order (|v| desc, index asc);
 *  - radix: histograms of the key's bits 30..20, 19..9 and 8..0 over the
 *    segment, compacting to candidates after the first one when the top
 *    bins hold few enough keys.
 * Radix selection yields a cut: keep the keys > T, plus the first `need`
 * keys equal to T in index order. Nothing allocates after create. */
#include "compress/compress_impl.h"

#include <math.h>

#define TOPK_SMALL_N 1024        /* quickselect at or below this size      */
#define TOPK_HEAP_K 128          /* heap selection below this k            */
#define TOPK_SAMPLE_MIN_N 32768  /* sampled path from this size on         */
#define TOPK_SAMPLE_MIN 4096     /* sample sizes                           */
#define TOPK_SAMPLE_MAX 65536
#define TOPK_SAMPLE_MU 32        /* sampled keys wanted above the cut      */
#define TOPK_BINS 2048           /* 11-bit radix digits                    */
#define TOPK_SUBHISTS 4          /* interleaved histograms: a hot bin would
                                    otherwise serialize on one counter     */
#define TOPK_BLOCK 16            /* elements per vectorized pre-check      */

typedef struct {
    uint32_t *cidx;   /* [cap + TOPK_BLOCK] candidates' local indices     */
    uint32_t *ckey;   /* [cap + TOPK_BLOCK] and keys, in index order      */
    size_t cap;       /* max over segments of min(n, 4k + 8192)           */
    uint32_t *tie;    /* [max_k] first indices of a tied key              */
    uint32_t *sample; /* [TOPK_SAMPLE_MAX] sampled keys                   */
    uint32_t *hist;   /* [TOPK_SUBHISTS * TOPK_BINS]                      */
    uint64_t *comp;   /* [TOPK_SMALL_N] composite keys (small, heap)      */
    deft_topk_stats_t stats;
} topk_t;

/* Keep every key > T, plus the first `need` keys == T (T may be -1). */
typedef struct {
    int64_t T;
    size_t need;
} cut_t;

static deft_status_t topk_init(deft_compressor_t *c)
{
    c->msg_bytes = c->total_k * (sizeof(uint32_t) + sizeof(float));
    c->float_off = c->total_k * sizeof(uint32_t);
    c->float_count = c->total_k;
    topk_t *tk = deft_alloc(sizeof *tk);
    c->impl = tk;
    if (!tk)
        goto nomem;
    for (size_t t = 0; t < c->n_seg; t++) {
        size_t n = c->seg[t].n, k = c->seg[t].k;
        size_t cap = 4 * k + 8192 < n ? 4 * k + 8192 : n;
        tk->cap = cap > tk->cap ? cap : tk->cap;
    }
    tk->cidx = deft_alloc((tk->cap + TOPK_BLOCK) * sizeof(uint32_t));
    tk->ckey = deft_alloc((tk->cap + TOPK_BLOCK) * sizeof(uint32_t));
    tk->tie = deft_alloc(c->max_k * sizeof(uint32_t));
    tk->sample = deft_alloc(TOPK_SAMPLE_MAX * sizeof(uint32_t));
    tk->hist = deft_alloc(TOPK_SUBHISTS * TOPK_BINS * sizeof(uint32_t));
    tk->comp = deft_alloc(TOPK_SMALL_N * sizeof(uint64_t));
    if (!tk->cidx || !tk->ckey || !tk->tie || !tk->sample || !tk->hist ||
        !tk->comp)
        goto nomem;
    return DEFT_OK;
nomem:
    return deft_fail(DEFT_ERR_NOMEM,
                     "deft_compressor_create: out of memory (topk, %zu "
                     "elements)",
                     c->dim);
}

static void topk_fini(deft_compressor_t *c)
{
    topk_t *tk = c->impl;
    if (tk) {
        deft_free(tk->cidx);
        deft_free(tk->ckey);
        deft_free(tk->tie);
        deft_free(tk->sample);
        deft_free(tk->hist);
        deft_free(tk->comp);
    }
    deft_free(tk);
}

void deft_topk_get_stats(const deft_compressor_t *c, deft_topk_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (c && c->ops->kind == DEFT_COMP_TOPK)
        *out = ((const topk_t *)c->impl)->stats;
}

/* Key i of an array of floats or of keys (masking a key is a no-op). */
static inline uint32_t key_at(const void *base, size_t i)
{
    uint32_t u;
    memcpy(&u, (const unsigned char *)base + 4 * i, sizeof u);
    return u & 0x7fffffffu;
}

/* 1 if some key of base[0..TOPK_BLOCK) is > tm1 (keys fit in int32, and
 * tm1 >= -1), resp. == t. These pre-checks are what the scans spend their
 * time in, so they use GCC's vector extension (SSE2 on plain x86-64). */
#if defined(__GNUC__)
typedef int32_t topk_v4i __attribute__((vector_size(16)));
static inline int block_any_gt(const void *base, int32_t tm1)
{
    topk_v4i a[TOPK_BLOCK / 4];
    memcpy(a, base, sizeof a);
    const topk_v4i m = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
    const topk_v4i t = {tm1, tm1, tm1, tm1};
    topk_v4i r = (a[0] & m) > t;
    for (int j = 1; j < TOPK_BLOCK / 4; j++)
        r |= (a[j] & m) > t;
    uint64_t h[2];
    memcpy(h, &r, sizeof h);
    return (h[0] | h[1]) != 0;
}
static inline int block_any_eq(const void *base, int32_t t)
{
    topk_v4i a[TOPK_BLOCK / 4];
    memcpy(a, base, sizeof a);
    const topk_v4i m = {0x7fffffff, 0x7fffffff, 0x7fffffff, 0x7fffffff};
    const topk_v4i tv = {t, t, t, t};
    topk_v4i r = (a[0] & m) == tv;
    for (int j = 1; j < TOPK_BLOCK / 4; j++)
        r |= (a[j] & m) == tv;
    uint64_t h[2];
    memcpy(h, &r, sizeof h);
    return (h[0] | h[1]) != 0;
}
#else
static inline int block_any_gt(const void *base, int32_t tm1)
{
    int32_t any = 0;
    for (int j = 0; j < TOPK_BLOCK; j++)
        any |= (int32_t)key_at(base, (size_t)j) > tm1;
    return any;
}
static inline int block_any_eq(const void *base, int32_t t)
{
    int32_t any = 0;
    for (int j = 0; j < TOPK_BLOCK; j++)
        any |= (int32_t)key_at(base, (size_t)j) == t;
    return any;
}
#endif

/* ---- radix selection ----------------------------------------------------- */

/* Sub-histograms pay off only when n dwarfs the bins to clear and merge. */
static size_t subhists_for(size_t n)
{
    return n >= 16 * TOPK_BINS ? TOPK_SUBHISTS : 1;
}

/* Histogram of (key >> shift) & (nbins - 1) over the keys whose bits from
 * pshift up equal prefix (pshift = 31: all keys), into hist[0..nbins). */
static void radix_hist(const void *base, size_t n, unsigned shift,
                       size_t nbins, unsigned pshift, uint32_t prefix,
                       uint32_t *hist)
{
    const size_t ns = subhists_for(n);
    memset(hist, 0, ns * nbins * sizeof *hist);
    const uint32_t m = (uint32_t)nbins - 1;
    uint32_t *h0 = hist, *h1 = hist + (ns > 1) * nbins,
             *h2 = hist + (ns > 1) * 2 * nbins,
             *h3 = hist + (ns > 1) * 3 * nbins;
    size_t i = 0;
    if (pshift >= 31) { /* no filter: the first pass */
        for (; i + 4 <= n; i += 4) {
            h0[(key_at(base, i) >> shift) & m]++;
            h1[(key_at(base, i + 1) >> shift) & m]++;
            h2[(key_at(base, i + 2) >> shift) & m]++;
            h3[(key_at(base, i + 3) >> shift) & m]++;
        }
        for (; i < n; i++)
            h0[(key_at(base, i) >> shift) & m]++;
    } else {
        for (; i + 4 <= n; i += 4) {
            uint32_t k0 = key_at(base, i), k1 = key_at(base, i + 1),
                     k2 = key_at(base, i + 2), k3 = key_at(base, i + 3);
            if (k0 >> pshift == prefix)
                h0[(k0 >> shift) & m]++;
            if (k1 >> pshift == prefix)
                h1[(k1 >> shift) & m]++;
            if (k2 >> pshift == prefix)
                h2[(k2 >> shift) & m]++;
            if (k3 >> pshift == prefix)
                h3[(k3 >> shift) & m]++;
        }
        for (; i < n; i++) {
            uint32_t k0 = key_at(base, i);
            if (k0 >> pshift == prefix)
                h0[(k0 >> shift) & m]++;
        }
    }
    if (ns > 1)
        for (size_t b = 0; b < nbins; b++)
            h0[b] += h1[b] + h2[b] + h3[b];
}

/* The bin holding the k-th largest key (1 <= k <= total count), walking
 * down from the top bin; *above = number of keys in higher bins. */
static uint32_t pick_bin(const uint32_t *hist, size_t nbins, size_t k,
                         size_t *above)
{
    size_t acc = 0, b = nbins;
    while (b-- > 1 && acc + hist[b] < k)
        acc += hist[b];
    *above = acc;
    return (uint32_t)b;
}

/* Finishes a radix selection whose top digit is b1 (bits 30..20), with
 * krem of the wanted keys still to be found there (1 <= krem <= count). */
static cut_t radix_finish(const void *base, size_t n, uint32_t b1,
                          size_t krem, uint32_t *hist)
{
    size_t above;
    cut_t cut;
    radix_hist(base, n, 9, TOPK_BINS, 20, b1, hist);
    uint32_t b2 = pick_bin(hist, TOPK_BINS, krem, &above);
    krem -= above;
    uint32_t pre = b1 << 11 | b2;
    if (krem == hist[b2]) { /* the whole bin: no third pass */
        cut.T = ((int64_t)pre << 9) - 1;
        cut.need = 0;
        return cut;
    }
    radix_hist(base, n, 0, 512, 9, pre, hist);
    uint32_t b3 = pick_bin(hist, 512, krem, &above);
    cut.T = (int64_t)(pre << 9 | b3);
    cut.need = krem - above;
    return cut;
}

/* Exact cut for the k largest of n keys (1 <= k <= n). */
static cut_t radix_select(const void *base, size_t n, size_t k,
                          uint32_t *hist)
{
    size_t above;
    radix_hist(base, n, 20, TOPK_BINS, 31, 0, hist);
    uint32_t b1 = pick_bin(hist, TOPK_BINS, k, &above);
    if (k - above == hist[b1]) {
        cut_t cut = {((int64_t)b1 << 20) - 1, 0};
        return cut;
    }
    return radix_finish(base, n, b1, k - above, hist);
}

/* ---- scans over the segment ---------------------------------------------- */

/* Collects (i, key) of the keys > tm1 among v[0..n) into cidx/ckey, in
 * index order. Returns their number, or SIZE_MAX as soon as it is known to
 * exceed cap (the arrays hold cap + TOPK_BLOCK entries: a block writes
 * every element and advances only over candidates, branch-free). */
static size_t compact(const float *v, size_t n, int32_t tm1, uint32_t *cidx,
                      uint32_t *ckey, size_t cap)
{
    size_t cnt = 0, i = 0;
    for (; i + TOPK_BLOCK <= n; i += TOPK_BLOCK) {
        if (!block_any_gt(v + i, tm1))
            continue;
        if (cnt > cap)
            return SIZE_MAX;
        for (size_t j = i; j < i + TOPK_BLOCK; j++) {
            uint32_t key = key_at(v, j);
            cidx[cnt] = (uint32_t)j;
            ckey[cnt] = key;
            cnt += (int32_t)key > tm1;
        }
    }
    for (; i < n; i++) {
        uint32_t key = key_at(v, i);
        if ((int32_t)key > tm1) {
            if (cnt >= cap)
                return SIZE_MAX;
            cidx[cnt] = (uint32_t)i;
            ckey[cnt++] = key;
        }
    }
    return cnt > cap ? SIZE_MAX : cnt;
}

/* The indices of the first (at most) want keys == t among v[0..n), in
 * index order, into out; returns how many were found. */
static size_t collect_ties(const float *v, size_t n, int32_t t, size_t want,
                           uint32_t *out)
{
    size_t got = 0, i = 0;
    for (; i + TOPK_BLOCK <= n && got < want; i += TOPK_BLOCK) {
        if (!block_any_eq(v + i, t))
            continue;
        for (size_t j = i; j < i + TOPK_BLOCK && got < want; j++)
            if ((int32_t)key_at(v, j) == t)
                out[got++] = (uint32_t)j;
    }
    for (; i < n && got < want; i++)
        if ((int32_t)key_at(v, i) == t)
            out[got++] = (uint32_t)i;
    return got;
}

/* Where a segment's entries go, and where it lives in v. */
typedef struct {
    float *v;       /* the segment, n floats                             */
    size_t n, k;
    uint32_t off;   /* global index of v[0]                              */
    uint32_t *oidx; /* k message indices                                 */
    float *oval;    /* k message values                                  */
} seg_out_t;

/* Entry e of the segment's message is local index i; its residual is 0. */
static inline void take(const seg_out_t *so, size_t e, size_t i)
{
    so->oidx[e] = so->off + (uint32_t)i;
    so->oval[e] = so->v[i];
    so->v[i] = 0.0f;
}

/* Emits the cut's k elements by scanning the whole segment. */
static void emit_full(const seg_out_t *so, cut_t cut)
{
    size_t need = cut.need, e = 0;
    const int64_t lo = need ? cut.T : cut.T + 1; /* smallest key taken */
    const int32_t tm1 = (int32_t)(lo - 1);
    size_t i = 0;
    for (; i + TOPK_BLOCK <= so->n && e < so->k; i += TOPK_BLOCK) {
        if (!block_any_gt(so->v + i, tm1))
            continue;
        for (size_t j = i; j < i + TOPK_BLOCK; j++) {
            int64_t key = key_at(so->v, j);
            if (key > cut.T || (key == cut.T && need && need--))
                take(so, e++, j);
        }
    }
    for (; i < so->n && e < so->k; i++) {
        int64_t key = key_at(so->v, i);
        if (key > cut.T || (key == cut.T && need && need--))
            take(so, e++, i);
    }
}

/* Selects the k largest among cnt >= k candidates and emits them. */
static void emit_candidates(const seg_out_t *so, topk_t *tk, size_t cnt)
{
    cut_t cut = radix_select(tk->ckey, cnt, so->k, tk->hist);
    size_t need = cut.need, e = 0;
    for (size_t j = 0; j < cnt && e < so->k; j++) {
        int64_t key = tk->ckey[j];
        if (key > cut.T || (key == cut.T && need && need--))
            take(so, e++, tk->cidx[j]);
    }
}

/* ---- small segments: quickselect; small k: heap ------------------------- */

/* Distinct 64-bit keys ordering (|v| desc, index asc) as larger first. */
static inline uint64_t composite(const float *v, size_t i)
{
    return (uint64_t)key_at(v, i) << 32 | (uint32_t)~(uint32_t)i;
}

/* The k-th largest of a[0..n) (1 <= k <= n, distinct values); reorders a.
 * Quickselect with a median-of-three pivot. */
static uint64_t kth_largest_u64(uint64_t *a, size_t n, size_t k)
{
    ptrdiff_t lo = 0, hi = (ptrdiff_t)n - 1, want = (ptrdiff_t)k - 1;
    while (lo < hi) {
        uint64_t x = a[lo], y = a[lo + (hi - lo) / 2], z = a[hi];
        uint64_t p = x > y ? (y > z ? y : (x > z ? z : x))
                           : (x > z ? x : (y > z ? z : y));
        ptrdiff_t i = lo, j = hi;
        while (i <= j) { /* descending: > p to the left, < p to the right */
            while (a[i] > p)
                i++;
            while (a[j] < p)
                j--;
            if (i <= j) {
                uint64_t tmp = a[i];
                a[i++] = a[j];
                a[j--] = tmp;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return a[want];
    }
    return a[want];
}

static void select_small(const seg_out_t *so, topk_t *tk)
{
    uint64_t *comp = tk->comp;
    for (size_t i = 0; i < so->n; i++)
        comp[i] = composite(so->v, i);
    uint64_t kth = kth_largest_u64(comp, so->n, so->k);
    size_t e = 0;
    for (size_t i = 0; i < so->n; i++)
        if (composite(so->v, i) >= kth)
            take(so, e++, i);
}

/* Restores the min-heap property of h[0..k) below position i. */
static void heap_sift_down(uint64_t *h, size_t k, size_t i)
{
    uint64_t x = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= k)
            break;
        if (c + 1 < k && h[c + 1] < h[c])
            c++;
        if (h[c] >= x)
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Heap selection for small k; 0 (nothing emitted) when the data keeps
 * replacing the heap's minimum (e.g. ascending magnitudes), where radix
 * selection is cheaper. A later index never beats an equal key, so only
 * keys above the heap's minimum key can enter. */
static int select_heap(const seg_out_t *so, topk_t *tk)
{
    const size_t n = so->n, k = so->k;
    uint64_t *h = tk->comp;
    for (size_t i = 0; i < k; i++)
        h[i] = composite(so->v, i);
    for (size_t i = k / 2; i-- > 0;)
        heap_sift_down(h, k, i);
    ptrdiff_t budget = (ptrdiff_t)(n / 8 + 8 * k); /* heap replacements */
    int32_t tm1 = (int32_t)(h[0] >> 32);
    size_t i = k;
    for (; i + TOPK_BLOCK <= n; i += TOPK_BLOCK) {
        if (!block_any_gt(so->v + i, tm1))
            continue;
        for (size_t j = i; j < i + TOPK_BLOCK; j++)
            if ((int32_t)key_at(so->v, j) > tm1) {
                h[0] = composite(so->v, j);
                heap_sift_down(h, k, 0);
                tm1 = (int32_t)(h[0] >> 32);
                budget--;
            }
        if (budget <= 0)
            return 0;
    }
    for (; i < n; i++)
        if ((int32_t)key_at(so->v, i) > tm1) {
            h[0] = composite(so->v, i);
            heap_sift_down(h, k, 0);
            tm1 = (int32_t)(h[0] >> 32);
        }
    /* Emit in index order: sort the k indices (insertion sort, k small). */
    uint32_t *ix = tk->tie;
    for (size_t a = 0; a < k; a++) {
        uint32_t x = ~(uint32_t)h[a];
        size_t b = a;
        for (; b > 0 && ix[b - 1] > x; b--)
            ix[b] = ix[b - 1];
        ix[b] = x;
    }
    for (size_t e = 0; e < k; e++)
        take(so, e, ix[e]);
    return 1;
}

/* ---- large segments: sampled threshold ---------------------------------- */

/* Sample size for the sampled path, or 0 when the segment is too small or
 * too dense for it to pay off. About TOPK_SAMPLE_MU sampled keys should lie
 * above the true cut (at least 16); the cut is then taken 3 sigma higher
 * in the sample (sigma = sqrt(mu)), so too few candidates are rare and
 * there are ~1.6 k of them. A larger sample would sharpen the cut, but
 * reading it costs more than the extra candidates do: each sampled key
 * is a cache miss. */
static size_t sample_size(size_t n, size_t k)
{
    if (n < TOPK_SAMPLE_MIN_N || k > n / 8)
        return 0;
    size_t S = TOPK_SAMPLE_MU * ((n + k - 1) / k);
    S = S < TOPK_SAMPLE_MIN ? TOPK_SAMPLE_MIN : S;
    S = S > TOPK_SAMPLE_MAX ? TOPK_SAMPLE_MAX : S;
    S = S > n / 8 ? n / 8 : S;
    return (double)k * (double)S >= 16.0 * (double)n ? S : 0;
}

/* Position j of the sample: one pseudo-random offset inside each of S
 * equal strata of the segment, from a fixed sequence x (a plain stride
 * would alias with periodic data, e.g. every other element zero). Results
 * never depend on the positions, only the speed does. */
static inline size_t sample_pos(uint64_t *x, size_t j, uint64_t stride)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return (size_t)(j * stride + (((*x >> 32) * stride) >> 32));
}
#define TOPK_SAMPLE_SEQ 0x9e3779b97f4a7c15ull

/* Reads the S sampled keys into out. The positions go to out first, so
 * that the reads can be prefetched: the hardware does not foresee them,
 * and without prefetching the sample costs as much as a pass over v. */
static void draw_sample(const float *v, size_t n, size_t S, uint32_t *out)
{
    enum { AHEAD = 32 };
    const uint64_t stride = n / S;
    uint64_t x = TOPK_SAMPLE_SEQ;
    for (size_t j = 0; j < S; j++)
        out[j] = (uint32_t)sample_pos(&x, j, stride);
    for (size_t j = 0; j < S; j++) {
#if defined(__GNUC__)
        if (j + AHEAD < S)
            __builtin_prefetch(v + out[j + AHEAD]);
#endif
        out[j] = key_at(v, out[j]);
    }
}

/* Emits the cnt candidates (all keys > t) and the first need keys == t,
 * merged in index order. */
static void emit_with_ties(const seg_out_t *so, const topk_t *tk, size_t cnt,
                           size_t need)
{
    size_t a = 0, b = 0, e = 0;
    while (a < cnt || b < need) {
        if (b == need || (a < cnt && tk->cidx[a] < tk->tie[b]))
            take(so, e++, tk->cidx[a++]);
        else
            take(so, e++, tk->tie[b++]);
    }
}

/* The sampled path with S sampled keys; 0 (nothing emitted) when the
 * sample misjudged the segment. */
static int select_sampled(const seg_out_t *so, topk_t *tk, size_t S)
{
    const size_t n = so->n, k = so->k;
    const size_t cap = tk->cap < n ? tk->cap : n;
    draw_sample(so->v, n, S, tk->sample);
    const double mu = (double)k * (double)S / (double)n;
    const size_t r = (size_t)ceil(mu + 3.0 * sqrt(mu)) + 1;
    if (r > S)
        return 0;
    cut_t cut = radix_select(tk->sample, S, r, tk->hist);
    /* thr: the smallest of the sample's r largest keys. */
    const int32_t thr = (int32_t)(cut.need ? cut.T : cut.T + 1);
    if (thr > 0) {
        size_t cnt = compact(so->v, n, thr - 1, tk->cidx, tk->ckey, cap);
        if (cnt != SIZE_MAX) {
            if (cnt < k) /* threshold too high */
                return 0;
            emit_candidates(so, tk, cnt);
            return 1;
        }
    }
    /* More than cap >= k keys are >= thr (with thr = 0: all n >= k), so
     * the k-th largest key is >= thr; many keys equal thr. Those above it
     * are the candidates; if fewer than k, the first ties complete them. */
    size_t cnt = compact(so->v, n, thr, tk->cidx, tk->ckey, cap);
    if (cnt == SIZE_MAX) /* the sample was far off */
        return 0;
    tk->stats.ties++;
    if (cnt >= k) {
        emit_candidates(so, tk, cnt);
        return 1;
    }
    size_t need = k - cnt;
    if (collect_ties(so->v, n, thr, need, tk->tie) < need)
        return 0; /* cannot happen (see above); stay exact regardless */
    emit_with_ties(so, tk, cnt, need);
    return 1;
}

/* ---- radix over the segment --------------------------------------------- */

static void select_radix(const seg_out_t *so, topk_t *tk)
{
    const size_t n = so->n, k = so->k;
    size_t above;
    radix_hist(so->v, n, 20, TOPK_BINS, 31, 0, tk->hist);
    uint32_t b1 = pick_bin(tk->hist, TOPK_BINS, k, &above);
    size_t in_bin = tk->hist[b1];
    if (above + in_bin <= tk->cap) {
        /* Few keys reach the top bin: one more pass collects exactly them,
         * and the rest of the selection runs on those. */
        size_t cnt = compact(so->v, n, (int32_t)(b1 << 20) - 1, tk->cidx,
                             tk->ckey, tk->cap);
        emit_candidates(so, tk, cnt);
        return;
    }
    /* Here above + in_bin > cap >= k: the top bin is only partly kept. */
    emit_full(so, radix_finish(so->v, n, b1, k - above, tk->hist));
}

static void topk_encode(deft_compressor_t *c, uint64_t step, float *v,
                        void *msg)
{
    (void)step;
    topk_t *tk = c->impl;
    uint32_t *idx = msg;
    float *val = (float *)(idx + c->total_k);
    for (size_t t = 0; t < c->n_seg; t++) {
        const deft_segment_t *s = &c->seg[t];
        seg_out_t so = {v + s->off, s->n, s->k, (uint32_t)s->off, idx, val};
        size_t S;
        if (s->k >= s->n) {
            for (size_t i = 0; i < s->n; i++)
                take(&so, i, i);
        } else if ((S = sample_size(s->n, s->k)) != 0) {
            if (select_sampled(&so, tk, S)) {
                tk->stats.sampled++;
            } else {
                tk->stats.fallback++;
                select_radix(&so, tk);
            }
        } else if (s->k < TOPK_HEAP_K && select_heap(&so, tk)) {
            tk->stats.heap++;
        } else if (s->n <= TOPK_SMALL_N) {
            tk->stats.small++;
            select_small(&so, tk);
        } else {
            tk->stats.direct++;
            select_radix(&so, tk);
        }
        idx += s->k;
        val += s->k;
    }
}

void deft_sparse_decode_add(const deft_compressor_t *c, const void *msg,
                            float alpha, float *out)
{
    const uint32_t *idx = msg;
    const float *val = (const float *)(idx + c->total_k);
    for (size_t j = 0; j < c->total_k; j++)
        if (idx[j] < c->dim) /* a corrupt index must not write elsewhere */
            out[idx[j]] += alpha * val[j];
}

size_t deft_topk_sample_positions(size_t n, size_t k, size_t *pos,
                                  size_t max)
{
    const size_t S = sample_size(n, k);
    uint64_t x = TOPK_SAMPLE_SEQ;
    for (size_t j = 0; j < S && j < max; j++)
        pos[j] = sample_pos(&x, j, n / S);
    return S;
}

DEFT_COMPRESSOR(deft_compress_topk_ops) = {
    .kind = DEFT_COMP_TOPK,
    .name = "topk",
    .help = "k largest magnitudes per tensor, with indices (allgather)",
    .wire = DEFT_WIRE_GATHER,
    .uses_ratio = 1,
    .init = topk_init,
    .fini = topk_fini,
    .encode = topk_encode,
    .decode_add = deft_sparse_decode_add,
    .select = NULL,
    .gather = NULL,
    .scatter = NULL,
};
