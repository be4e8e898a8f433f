/*
 * guard.h: what faceverifyd does before a request reaches its handler and
 * to every answer on the way out: load shedding (a bound on requests in
 * flight), per-key rate limits (a token bucket per collection key) and the
 * security headers, and a memory budget for image requests (bytes reserved
 * from an estimate made from the image header before decoding).  Pure policy with no HTTP library
 * types, so that it can be read and tested on its own; http.c and routes.c call it.
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

/* Memory budget.  Bytes a request with the n images w[i] x h[i] may peak
 * at, estimated before decoding (see guard.c for the measured figures):
 * every decode at decode_bpp[i] bytes a pixel (fv_image_decode_bpp; NULL:
 * 3, the RGB image alone), plus the largest detection on an image as
 * it detects (MMOD and Haar: downscaled to max_side, or doubled by the
 * auto-upsample; MTCNN: its pyramid's first level), plus a fixed part.
 * detector and max_side: a resolved fv_detect_options's
 * (fv_detect_options_resolve; max_side 0: never downscaled).  Sizes <= 0
 * count nothing. */
uint64_t fvs_guard_images_cost(const int *w, const int *h, const unsigned *decode_bpp, int n,
                               int detector, int max_side);

/* Reserves bytes of the server-wide budget (> 0), waiting up to wait_ms
 * for other requests to release theirs.  0 reserved (call
 * fvs_guard_mem_release with the same bytes when the memory is freed), -1
 * still over the budget after the wait (answer 503 overloaded with
 * Retry-After), -2 bytes alone exceed the budget (no wait helps).
 * Requests above budget / 8 may fill the budget only up to 7/8 of it (or
 * the whole of it when they need more): the rest stays for small ones.
 * Thread-safe; waiters are woken by every release. */
int fvs_guard_mem_acquire(fvs_guard *g, uint64_t budget, uint64_t bytes, int wait_ms);
void fvs_guard_mem_release(fvs_guard *g, uint64_t bytes);
/* Bytes reserved now (for tests and logs). */
uint64_t fvs_guard_mem_reserved(fvs_guard *g);

/* The default budget: min(RAM / 4, 3/4 of this process's cgroup v2
 * memory.max if set, 3 GiB).  A quarter of RAM, as a machine is shared
 * with the database and the OS; three quarters of a cgroup limit, which is
 * the service's own; 3 GiB so that under the documented MemoryMax=4G 1 GiB
 * stays for the models (~50 MB), request bodies and JSON. */
uint64_t fvs_guard_default_budget(void);

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
