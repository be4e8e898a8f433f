/*
 * guard.h: what faceverifyd does before a request reaches its handler and
 * to every answer on the way out: load shedding (a bound on requests in
 * flight), per-key rate limits (a token bucket per collection key) and the
 * security headers.  Pure policy with no HTTP library types, so that it can
 * be read and tested on its own; http.c and routes.c call it.
 */
#ifndef FVS_GUARD_H
#define FVS_GUARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct fvs_guard fvs_guard;

/* max_inflight: requests handled at once before answering 503 (> 0).
 * rate: tokens per second per key (0: no rate limit); burst: bucket size
 * (< 1: max(1, rate)).  Returns NULL when out of memory. */
fvs_guard *fvs_guard_create(int max_inflight, double rate, double burst);
void fvs_guard_destroy(fvs_guard *g);

/* Admission: 0 admitted (call fvs_guard_leave when the request ends), -1
 * past capacity (answer 503 with Retry-After; do not call leave). */
int fvs_guard_enter(fvs_guard *g);
void fvs_guard_leave(fvs_guard *g);
/* Requests in flight now (for health and tests). */
int fvs_guard_inflight(fvs_guard *g);

/* Takes one token from the bucket of the collection coll.  0 allowed, 1
 * limited with *retry_after_s (whole seconds, >= 1) set.  Thread-safe. */
int fvs_guard_rate(fvs_guard *g, int64_t coll, int *retry_after_s);

/* The security headers of every response, as name/value pairs ending in
 * NULL; then the Content-Security-Policy and Cache-Control values by kind:
 * 0 API answers (JSON), 1 HTML pages, 2 other documents. */
const char *const *fvs_security_headers(void);
const char *fvs_csp(int kind);
const char *fvs_cache_control(int kind);

#endif
