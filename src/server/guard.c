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
 */
#include "server/guard.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

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
