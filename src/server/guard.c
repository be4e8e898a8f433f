/*
 * guard.c: load shedding, per-key rate limits and security headers (see
 * guard.h).
 *
 * Shedding: one atomic counter of requests being handled.  A request that
 * would take it past max_inflight is answered 503 at once, before its body
 * is read, so a burst past capacity costs the server almost nothing and the
 * client learns to come back (Retry-After) instead of waiting in a queue
 * that has no end.
 *
 * Rate limits: a token bucket per collection (a collection has exactly one
 * live key, so this is per key), refilled continuously at `rate` tokens a
 * second up to `burst`.  Buckets live in a small open list guarded by one
 * mutex: the number of buckets is the number of collections that made a
 * request, and the work under the lock is a few arithmetic operations.
 * Keys that fail authentication never get a bucket, so unknown keys cannot
 * grow the list.
 *
 * Memory budget: a count of requests does not bound memory, since one
 * image request peaks at anything from ~30 MB to ~400 MB depending on its
 * pixels (issue 16).  Image requests therefore reserve an estimate of their
 * peak from a server-wide budget (bytes under one mutex, waiters on a
 * condition variable on CLOCK_MONOTONIC) before decoding, from the w x h
 * the image header states, and release it when the images are freed.  Past
 * the budget a request waits a bounded time, then is answered 503; the
 * last eighth of the budget is kept for requests of at most an eighth, so
 * that ordinary photos are still served during a burst of huge ones.  The
 * estimate's constants are measured (bench/mem_budget.py, peak RSS over
 * RSS of one request on a fresh server, Release build):
 *   - decode: 3 bytes per pixel (the RGB8 image; fv_image_decode has no
 *     other image-sized buffer, except an EXIF-rotated JPEG's copy, which
 *     the margin covers), or more for the formats whose codecs hold their
 *     own frames (fv_image_decode_bpp: HEIC 9, AVIF 16);
 *   - detection: MMOD runs on the image downscaled to max_side, or, with
 *     the auto-upsample, doubled when that stays under 6 MP; its pyramid
 *     and network activations cost about 115 bytes per pixel of that image
 *     (measured: 0.64 MP 79 MB, 2.56 MP 300 MB, a faceless 1 MP doubled to
 *     4 MP 469 MB, a faceless 1.5 MP doubled to 6 MP 700 MB, 40 MP 420 MB
 *     of which 120 MB is the decode); DETECT_BPP rounds up.  Whether the
 *     second, doubled pass runs depends on the faces found, unknown before,
 *     so it is always counted; verify detects its two images one after the
 *     other, so only the larger detection counts;
 *   - detection with MTCNN (the default detector when its weights are
 *     installed): on the photo as it is (no max_side shrink by default),
 *     its pyramid's first level (0.36x the pixels, float RGB) plus P-Net's
 *     strips of 64 rows and the candidates: ~5 bytes per pixel of the
 *     photo (measured, `faceverify detect --threads 1`, peak RSS over a
 *     small photo's 66 MB: 12 MP 93 MB, 24 MP 190 MB, of which the decode
 *     is 36 / 72 MB); MTCNN_BPP rounds up;
 *   - a fixed part for landmarks, chips, embedding and the request (the
 *     measured intercept is under 10 MB).
 */
#include "server/guard.h"

#include "faceverify.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The estimate's constants (see the file comment for how they were
 * measured). */
#define DECODE_BPP 3u
#define DETECT_BPP 118u
#define MTCNN_BPP 8u
#define FIXED_BYTES (24u * 1000u * 1000u)
/* The library's auto-upsample bound (src/detect/policy.c): the image is
 * doubled for a second MMOD pass only when that stays under 6 MP. */
#define AUTO_UPSAMPLE_PIXELS 6000000.0
#define GIB (1024ull * 1024ull * 1024ull)

typedef struct bucket {
    int64_t coll;
    double tokens;
    double last; /* seconds, CLOCK_MONOTONIC */
    struct bucket *next;
} bucket;

struct fvs_guard {
    int max_inflight;
    atomic_int inflight;
    double rate, burst;
    pthread_mutex_t mu;
    bucket *buckets;
    pthread_mutex_t mem_mu; /* guards mem_reserved */
    pthread_cond_t mem_cv;  /* signalled on every release; CLOCK_MONOTONIC */
    uint64_t mem_reserved;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

fvs_guard *fvs_guard_create(int max_inflight, double rate, double burst) {
    fvs_guard *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->max_inflight = max_inflight > 0 ? max_inflight : 1;
    atomic_init(&g->inflight, 0);
    g->rate = rate > 0 ? rate : 0;
    g->burst = burst >= 1 ? burst : (rate > 1 ? rate : 1);
    pthread_mutex_init(&g->mu, NULL);
    pthread_mutex_init(&g->mem_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&g->mem_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc) {
        pthread_mutex_destroy(&g->mem_mu);
        pthread_mutex_destroy(&g->mu);
        free(g);
        return NULL;
    }
    return g;
}

void fvs_guard_destroy(fvs_guard *g) {
    if (!g) return;
    bucket *b = g->buckets;
    while (b) {
        bucket *next = b->next;
        free(b);
        b = next;
    }
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->mem_cv);
    pthread_mutex_destroy(&g->mem_mu);
    free(g);
}

int fvs_guard_enter(fvs_guard *g) {
    int now = atomic_fetch_add(&g->inflight, 1);
    if (now >= g->max_inflight) {
        atomic_fetch_sub(&g->inflight, 1);
        return -1;
    }
    return 0;
}

void fvs_guard_leave(fvs_guard *g) {
    atomic_fetch_sub(&g->inflight, 1);
}

int fvs_guard_inflight(fvs_guard *g) {
    return atomic_load(&g->inflight);
}

/* Peak bytes of detecting on a w x h image under the library's policy:
 * MMOD (and Haar, costed as MMOD) on the image downscaled to max_side,
 * doubled by the auto-upsample when that stays under
 * AUTO_UPSAMPLE_PIXELS; MTCNN on the image downscaled to max_side. */
static double detect_bytes(double w, double h, int detector, int max_side) {
    double longer = w > h ? w : h;
    double px = w * h;
    if (max_side > 0 && longer > max_side)
        px *= ((double)max_side / longer) * ((double)max_side / longer);
    if (detector == FV_DETECTOR_MTCNN) return px * MTCNN_BPP;
    return (px * 4 <= AUTO_UPSAMPLE_PIXELS ? px * 4 : px) * DETECT_BPP;
}

uint64_t fvs_guard_images_cost(const int *w, const int *h, const unsigned *decode_bpp, int n,
                               int detector, int max_side) {
    double decode = 0, detect = 0;
    for (int i = 0; i < n; i++) {
        if (w[i] <= 0 || h[i] <= 0) continue;
        unsigned bpp = decode_bpp && decode_bpp[i] > DECODE_BPP ? decode_bpp[i] : DECODE_BPP;
        decode += (double)w[i] * (double)h[i] * bpp;
        double d = detect_bytes(w[i], h[i], detector, max_side);
        if (d > detect) detect = d;
    }
    double total = decode + detect + FIXED_BYTES;
    return total >= 1.8e19 ? UINT64_MAX : (uint64_t)total;
}

int fvs_guard_mem_acquire(fvs_guard *g, uint64_t budget, uint64_t bytes, int wait_ms) {
    if (bytes > budget) return -2;
    /* The last eighth of the budget is kept for requests of at most an
     * eighth (ordinary photos), so that a burst of huge images cannot
     * starve them; a request too large for the rest may still use it all. */
    uint64_t cap = bytes > budget / 8 ? budget - budget / 8 : budget;
    if (bytes > cap) cap = budget;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += wait_ms / 1000;
    deadline.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    int rc = -1;
    pthread_mutex_lock(&g->mem_mu);
    for (;;) {
        if (g->mem_reserved <= cap - bytes) { /* bytes <= cap: no wrap */
            g->mem_reserved += bytes;
            rc = 0;
            break;
        }
        if (wait_ms <= 0) break;
        int w = pthread_cond_timedwait(&g->mem_cv, &g->mem_mu, &deadline);
        if (w == ETIMEDOUT) {
            /* one last look: a release may have come with the timeout */
            if (g->mem_reserved <= cap - bytes) {
                g->mem_reserved += bytes;
                rc = 0;
            }
            break;
        }
    }
    pthread_mutex_unlock(&g->mem_mu);
    return rc;
}

void fvs_guard_mem_release(fvs_guard *g, uint64_t bytes) {
    pthread_mutex_lock(&g->mem_mu);
    g->mem_reserved = bytes > g->mem_reserved ? 0 : g->mem_reserved - bytes;
    pthread_cond_broadcast(&g->mem_cv);
    pthread_mutex_unlock(&g->mem_mu);
}

uint64_t fvs_guard_mem_reserved(fvs_guard *g) {
    pthread_mutex_lock(&g->mem_mu);
    uint64_t v = g->mem_reserved;
    pthread_mutex_unlock(&g->mem_mu);
    return v;
}

/* The number in file path, or 0 (missing, "max", unreadable). */
static uint64_t read_u64(const char *path) {
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    if (!f) return 0;
    if (fscanf(f, "%llu", &v) != 1) v = 0; /* "max" does not scan */
    fclose(f);
    return v;
}

/* This process's cgroup memory limit, or 0 for none: cgroup v2
 * memory.max, or v1 memory.limit_in_bytes ("unlimited" there is a huge
 * number, which changes no minimum), at the path /proc/self/cgroup names
 * and at the mount's root (a container sees its own cgroup there). */
static uint64_t cgroup_limit(void) {
    char line[512], path[640];
    uint64_t limit = 0, v;
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        path[0] = 0;
        if (strncmp(line, "0::", 3) == 0)
            snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", line + 3);
        else if (strstr(line, ":memory:"))
            snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.limit_in_bytes",
                     strstr(line, ":memory:") + 8);
        if (path[0] && (v = read_u64(path)) && (!limit || v < limit)) limit = v;
    }
    fclose(f);
    static const char *const roots[2] = {"/sys/fs/cgroup/memory.max",
                                         "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
    for (int i = 0; i < 2; i++)
        if ((v = read_u64(roots[i])) && (!limit || v < limit)) limit = v;
    return limit;
}

uint64_t fvs_guard_default_budget(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t budget = 3 * GIB;
    if (pages > 0 && page > 0 && (uint64_t)pages * (uint64_t)page / 4 < budget)
        budget = (uint64_t)pages * (uint64_t)page / 4;
    uint64_t cg = cgroup_limit();
    if (cg && cg / 4 * 3 < budget) budget = cg / 4 * 3;
    return budget;
}

int fvs_guard_rate(fvs_guard *g, int64_t coll, int *retry_after_s) {
    if (g->rate <= 0) return 0;
    double t = now_s();
    int limited = 0;
    pthread_mutex_lock(&g->mu);
    bucket *b = g->buckets;
    while (b && b->coll != coll) b = b->next;
    if (!b) {
        b = calloc(1, sizeof *b);
        if (!b) { /* out of memory: fail open rather than refuse everyone */
            pthread_mutex_unlock(&g->mu);
            return 0;
        }
        b->coll = coll;
        b->tokens = g->burst;
        b->last = t;
        b->next = g->buckets;
        g->buckets = b;
    }
    b->tokens += (t - b->last) * g->rate;
    if (b->tokens > g->burst) b->tokens = g->burst;
    b->last = t;
    if (b->tokens >= 1) {
        b->tokens -= 1;
    } else {
        limited = 1;
        double wait = (1 - b->tokens) / g->rate;
        int w = wait > 3600 ? 3600 : (int)wait;
        if (w < wait) w++; /* round up: coming back sooner would fail again */
        *retry_after_s = w < 1 ? 1 : w;
    }
    pthread_mutex_unlock(&g->mu);
    return limited;
}

/* Headers every answer carries, whatever it is. */
static const char *const COMMON_HEADERS[] = {
    "X-Content-Type-Options",
    "nosniff",
    "X-Frame-Options",
    "DENY",
    "Referrer-Policy",
    "no-referrer",
    "Cross-Origin-Resource-Policy",
    "same-origin",
    NULL,
};

/* API answers and documents are data, never a page: nothing may run in,
 * load from or frame them.  HTML pages (docs) carry their own inline
 * script and style and call the API on the same origin. */
#define CSP_NONE "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#define CSP_PAGE                                                                                   \
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "    \
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "    \
    "form-action 'none'"

const char *const *fvs_security_headers(void) {
    return COMMON_HEADERS;
}

const char *fvs_csp(int kind) {
    return kind == 1 ? CSP_PAGE : CSP_NONE;
}

const char *fvs_cache_control(int kind) {
    /* API answers hold personal data: never stored by a cache.  Static
     * files may be kept but are revalidated. */
    return kind == 0 ? "no-store" : "no-cache";
}
