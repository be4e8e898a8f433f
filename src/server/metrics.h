/*
 * metrics.h: faceverifyd's Prometheus metrics (GET /metrics, text
 * exposition format 0.0.4) and its per-request log line.
 *
 * Debian ships no maintained C Prometheus client (prometheus-client-c /
 * libprom is not in bookworm), and what is exposed is small, so the
 * counters and the text format are written here.  Every label set is
 * fixed or bounded: routes are the route table's path patterns (never raw
 * URLs), methods one of a fixed list, statuses HTTP codes, stages a fixed
 * list; collections are named only by the templates gauge, for the first
 * FVS_METRICS_MAX_COLLECTIONS of them.
 *
 * Request-side figures (counters, histograms) are kept in an fvs_metrics
 * under one mutex: requests take 0.1-2 s in the network, so one lock per
 * finished request costs nothing measurable.  State-side figures (in
 * flight, templates, index, models, memory) are read at scrape time from
 * the objects that hold them.
 */
#ifndef FVS_METRICS_H
#define FVS_METRICS_H

#include <jansson.h>
#include <stddef.h>

struct fvs_server;
struct fvs_req;
struct fvs_resp;

typedef struct fvs_metrics fvs_metrics;

/* Collections the templates gauge names, at most (the first by id). */
#define FVS_METRICS_MAX_COLLECTIONS 1000

/* The request log's format (--log-format). */
typedef enum { FVS_LOG_TEXT = 0, FVS_LOG_JSON } fvs_log_format;

/* Who may read /metrics (--metrics, --no-metrics, --metrics-local-only). */
typedef enum { FVS_METRICS_ON = 0, FVS_METRICS_LOCAL, FVS_METRICS_OFF } fvs_metrics_mode;

/* Empty metrics, the process start time taken now.  NULL when out of
 * memory.  fvs_metrics_destroy(NULL) is a no-op. */
fvs_metrics *fvs_metrics_create(void);
void fvs_metrics_destroy(fvs_metrics *m);

/* One finished request: counts it by route (the route table's pattern, or
 * NULL: none matched), method and status, observes seconds (from its
 * request line to its answer) and, from a JSON answer's "timings_ms", each
 * pipeline stage.  A 503 "overloaded" is also counted as shed, a 429 as
 * rate limited.  m NULL: nothing.  Thread-safe. */
void fvs_metrics_request(fvs_metrics *m, const char *route, const char *method, int status,
                         double seconds, const json_t *body);

/* The whole exposition for srv (its request figures, then the guard,
 * store, index, models and process) into *text (*len bytes, NUL-ended;
 * the caller frees).  0 ok, -1 out of memory.  Thread-safe. */
int fvs_metrics_render(const struct fvs_server *srv, char **text, size_t *len);

/* Writes r's log line for its answer (status, seconds) to stdout when the
 * server logs JSON (one object a line: time, level, request_id, method,
 * route, status, duration_ms, remote); nothing in text mode, which logs
 * no requests.  No key, body or biometric data is written.  Thread-safe
 * (one write per line). */
void fvs_log_request(const struct fvs_req *r, int status, double seconds);

#endif
