/*
 * metrics.c: the Prometheus exposition and the request log (see
 * metrics.h for what is counted and why the labels stay bounded).
 *
 * Request series live in fixed arrays found by a linear scan: a few dozen
 * routes, eight methods and the handful of statuses a route answers make
 * a few hundred series at most; past MAX_REQ_SERIES a new combination is
 * not counted (and faceverify_metrics_series_dropped_total says so),
 * rather than letting memory grow with what clients send.
 *
 * Histograms keep per-bucket counts and are made cumulative when written,
 * ending in le="+Inf" equal to _count, as the format requires.
 */
#include "server/metrics.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/http.h"
#include "server/server.h"

/* Bucket bounds in seconds, 1 ms .. 10 s: requests (keyless health at
 * well under 1 ms, an identify on a large photo at seconds) and stages. */
static const double BUCKETS[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                 0.25,  0.5,    1,     2.5,  5,     10};
#define NBUCKETS (sizeof BUCKETS / sizeof BUCKETS[0])

/* The pipeline stages: the label, and the key of the answer's timings_ms
 * that holds its milliseconds (the align stage is reported as "chip"). */
static const struct {
    const char *label, *key;
} STAGES[] = {{"decode", "decode"}, {"detect", "detect"}, {"landmarks", "landmarks"},
              {"align", "chip"},    {"embed", "embed"},   {"search", "search"}};
#define NSTAGES (sizeof STAGES / sizeof STAGES[0])

/* Methods counted by name; any other is "other". */
static const char *const METHODS[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
#define NMETHODS (sizeof METHODS / sizeof METHODS[0])

#define MAX_REQ_SERIES 1024
#define MAX_ROUTES 128
#define NO_ROUTE "unmatched"

typedef struct histogram {
    uint64_t bucket[NBUCKETS]; /* observations in (BUCKETS[i-1], BUCKETS[i]] */
    uint64_t count;
    double sum;
} histogram;

typedef struct req_series {
    const char *route; /* static storage: the route table's, or NO_ROUTE */
    int method;        /* index in METHODS, NMETHODS: other */
    int status;
    uint64_t n;
} req_series;

typedef struct route_hist {
    const char *route;
    histogram h;
} route_hist;

struct fvs_metrics {
    pthread_mutex_t mu;
    double start_time; /* Unix seconds */
    req_series req[MAX_REQ_SERIES];
    size_t nreq;
    route_hist dur[MAX_ROUTES];
    size_t ndur;
    histogram stage[NSTAGES];
    uint64_t shed, rate_limited, dropped;
};

fvs_metrics *fvs_metrics_create(void) {
    fvs_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    if (pthread_mutex_init(&m->mu, NULL)) {
        free(m);
        return NULL;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    m->start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    return m;
}

void fvs_metrics_destroy(fvs_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int method_index(const char *method) {
    for (size_t i = 0; method && i < NMETHODS; i++)
        if (strcmp(method, METHODS[i]) == 0) return (int)i;
    return (int)NMETHODS;
}

static const char *method_name(int i) {
    return i >= 0 && (size_t)i < NMETHODS ? METHODS[i] : "other";
}

static void observe(histogram *h, double v) {
    if (!(v >= 0)) v = 0; /* NaN or negative: a clock step, counted as 0 */
    size_t i = 0;
    while (i < NBUCKETS && v > BUCKETS[i]) i++;
    if (i < NBUCKETS) h->bucket[i]++;
    h->count++;
    h->sum += v;
}

/* The series of (route, method, status), made on first use; NULL when the
 * table is full.  m->mu held. */
static req_series *req_get(fvs_metrics *m, const char *route, int method, int status) {
    for (size_t i = 0; i < m->nreq; i++) {
        req_series *s = &m->req[i];
        if (s->method == method && s->status == status && strcmp(s->route, route) == 0) return s;
    }
    if (m->nreq == MAX_REQ_SERIES) return NULL;
    req_series *s = &m->req[m->nreq++];
    s->route = route;
    s->method = method;
    s->status = status;
    return s;
}

/* route's duration histogram, made on first use; NULL when full.  m->mu
 * held. */
static histogram *dur_get(fvs_metrics *m, const char *route) {
    for (size_t i = 0; i < m->ndur; i++)
        if (strcmp(m->dur[i].route, route) == 0) return &m->dur[i].h;
    if (m->ndur == MAX_ROUTES) return NULL;
    m->dur[m->ndur].route = route;
    return &m->dur[m->ndur++].h;
}

/* Whether body is the error answer with this code. */
static int error_code_is(const json_t *body, const char *code) {
    const json_t *c = json_object_get(json_object_get(body, "error"), "code");
    return json_is_string(c) && strcmp(json_string_value(c), code) == 0;
}

void fvs_metrics_request(fvs_metrics *m, const char *route, const char *method, int status,
                         double seconds, const json_t *body) {
    if (!m) return;
    if (!route) route = NO_ROUTE;
    if (status < 100 || status > 599) status = 0;
    /* Stage timings come from the answer, the numbers its client reads. */
    double stage_s[NSTAGES];
    int have[NSTAGES] = {0};
    const json_t *t = json_object_get(body, "timings_ms");
    for (size_t i = 0; i < NSTAGES; i++) {
        const json_t *v = json_object_get(t, STAGES[i].key);
        if (json_is_number(v)) {
            stage_s[i] = json_number_value(v) / 1000.0;
            have[i] = 1;
        }
    }
    int shed = status == 503 && error_code_is(body, "overloaded");
    pthread_mutex_lock(&m->mu);
    req_series *s = req_get(m, route, method_index(method), status);
    histogram *h = dur_get(m, route);
    if (s) s->n++;
    if (h) observe(h, seconds);
    if (!s || !h) m->dropped++;
    for (size_t i = 0; i < NSTAGES; i++)
        if (have[i]) observe(&m->stage[i], stage_s[i]);
    if (shed) m->shed++;
    if (status == 429) m->rate_limited++;
    pthread_mutex_unlock(&m->mu);
}

/* ------------------------------------------------------------ writing */

/* A label value with \, " and newline escaped, as the format requires. */
static void put_label(FILE *f, const char *v) {
    for (; *v; v++) {
        if (*v == '\\')
            fputs("\\\\", f);
        else if (*v == '"')
            fputs("\\\"", f);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

static void family(FILE *f, const char *name, const char *type, const char *help) {
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram's series: name{label="value",le=...}, _sum, _count. */
static void put_histogram(FILE *f, const char *name, const char *label, const char *value,
                          const histogram *h) {
    uint64_t cum = 0;
    for (size_t i = 0; i <= NBUCKETS; i++) {
        fprintf(f, "%s_bucket{%s=\"", name, label);
        put_label(f, value);
        if (i < NBUCKETS) {
            cum += h->bucket[i];
            fprintf(f, "\",le=\"%g\"} %llu\n", BUCKETS[i], (unsigned long long)cum);
        } else {
            fprintf(f, "\",le=\"+Inf\"} %llu\n", (unsigned long long)h->count);
        }
    }
    fprintf(f, "%s_sum{%s=\"", name, label);
    put_label(f, value);
    fprintf(f, "\"} %.9g\n%s_count{%s=\"", h->sum, name, label);
    put_label(f, value);
    fprintf(f, "\"} %llu\n", (unsigned long long)h->count);
}

/* The request-side families, copied under the lock and written after. */
static int put_requests(FILE *f, fvs_metrics *m) {
    fvs_metrics *c = malloc(sizeof *c);
    if (!c) return -1;
    pthread_mutex_lock(&m->mu);
    memcpy(c, m, sizeof *c);
    pthread_mutex_unlock(&m->mu);
    family(f, "faceverify_http_requests_total", "counter",
           "HTTP requests answered, by route pattern, method and status.");
    for (size_t i = 0; i < c->nreq; i++) {
        fputs("faceverify_http_requests_total{route=\"", f);
        put_label(f, c->req[i].route);
        fprintf(f, "\",method=\"%s\",status=\"%d\"} %llu\n", method_name(c->req[i].method),
                c->req[i].status, (unsigned long long)c->req[i].n);
    }
    family(f, "faceverify_http_request_duration_seconds", "histogram",
           "Time from a request's request line to its answer, by route pattern.");
    for (size_t i = 0; i < c->ndur; i++)
        put_histogram(f, "faceverify_http_request_duration_seconds", "route", c->dur[i].route,
                      &c->dur[i].h);
    family(f, "faceverify_stage_duration_seconds", "histogram",
           "Pipeline stage times, as the answers' timings_ms report them.");
    for (size_t i = 0; i < NSTAGES; i++)
        put_histogram(f, "faceverify_stage_duration_seconds", "stage", STAGES[i].label,
                      &c->stage[i]);
    family(f, "faceverify_http_requests_shed_total", "counter",
           "Requests answered 503 overloaded (load shedding, memory budget).");
    fprintf(f, "faceverify_http_requests_shed_total %llu\n", (unsigned long long)c->shed);
    family(f, "faceverify_http_requests_rate_limited_total", "counter",
           "Requests answered 429 (a key over its rate limit).");
    fprintf(f, "faceverify_http_requests_rate_limited_total %llu\n",
            (unsigned long long)c->rate_limited);
    family(f, "faceverify_metrics_series_dropped_total", "counter",
           "Requests not counted by route because the series tables were full.");
    fprintf(f, "faceverify_metrics_series_dropped_total %llu\n", (unsigned long long)c->dropped);
    family(f, "faceverify_process_start_time_seconds", "gauge",
           "Start time of the process since the Unix epoch, in seconds.");
    fprintf(f, "faceverify_process_start_time_seconds %.3f\n", c->start_time);
    free(c);
    return 0;
}

/* The first FVS_METRICS_MAX_COLLECTIONS collections, gathered before any
 * is counted (the store's lock is held while the callback runs). */
typedef struct coll_list {
    fvs_collection *c;
    size_t n, total;
} coll_list;

static int coll_row(void *ctx, const fvs_collection *coll) {
    coll_list *l = ctx;
    if (l->n < FVS_METRICS_MAX_COLLECTIONS) l->c[l->n++] = *coll;
    l->total++;
    return 0;
}

static void put_templates(FILE *f, const fvs_server *srv) {
    if (!srv->store) return;
    coll_list l = {0};
    l.c = malloc(FVS_METRICS_MAX_COLLECTIONS * sizeof *l.c);
    char err[256];
    if (!l.c || fvs_collection_each(srv->store, coll_row, &l, err, sizeof err)) {
        free(l.c);
        return; /* the database is down: health says so; no figures rather than wrong ones */
    }
    family(f, "faceverify_collections", "gauge", "Collections in the database.");
    fprintf(f, "faceverify_collections %zu\n", l.total);
    family(f, "faceverify_templates", "gauge",
           "Templates stored per collection (the first 1000 collections by id).");
    for (size_t i = 0; i < l.n; i++) {
        int64_t total = 0, stale = 0;
        if (fvs_template_counts(srv->store, l.c[i].id, 0, l.c[i].model, &total, &stale, err,
                                sizeof err))
            continue;
        fputs("faceverify_templates{collection=\"", f);
        put_label(f, l.c[i].name);
        fprintf(f, "\"} %lld\n", (long long)total);
    }
    free(l.c);
}

/* Vectors and bytes held by the loaded search indexes, by backend. */
typedef struct index_sums {
    size_t n[FVSEARCH_KINDS], bytes[FVSEARCH_KINDS];
} index_sums;

static void index_row(void *ctx, fvsearch_kind kind, size_t n, size_t bytes) {
    index_sums *s = ctx;
    if ((int)kind < 0 || kind >= FVSEARCH_KINDS) return;
    s->n[kind] += n;
    s->bytes[kind] += bytes;
}

static void put_index(FILE *f, const fvs_server *srv) {
    if (!srv->index) return;
    index_sums s;
    memset(&s, 0, sizeof s);
    fvs_index_sizes(srv->index, index_row, &s);
    family(f, "faceverify_index_info", "gauge",
           "The server's default search backend (--index-backend), always 1.");
    fprintf(f, "faceverify_index_info{backend=\"%s\"} 1\n",
            fvs_index_backend_in_force(srv->index, NULL));
    family(f, "faceverify_index_size", "gauge",
           "Templates held by the loaded search indexes, by backend.");
    for (int k = 0; k < FVSEARCH_KINDS; k++)
        fprintf(f, "faceverify_index_size{backend=\"%s\"} %zu\n",
                fvsearch_kind_name((fvsearch_kind)k), s.n[k]);
    family(f, "faceverify_index_memory_bytes", "gauge",
           "Bytes held by the loaded search indexes' structures, by backend.");
    for (int k = 0; k < FVSEARCH_KINDS; k++)
        fprintf(f, "faceverify_index_memory_bytes{backend=\"%s\"} %zu\n",
                fvsearch_kind_name((fvsearch_kind)k), s.bytes[k]);
}

static void put_models(FILE *f, const fvs_server *srv) {
    json_t *arr = fvs_models_json(srv->models, srv->default_threshold);
    family(f, "faceverify_model_loaded", "gauge",
           "1 when the embedding model is loaded and usable, else 0.");
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o) {
        const char *id = json_string_value(json_object_get(o, "id"));
        const char *kind = json_string_value(json_object_get(o, "kind"));
        if (!id) continue;
        /* The ResNet is the engine's (with the detector and landmarks):
         * loaded when the engine is; trained models load at start or the
         * server does not start. */
        int loaded = kind && strcmp(kind, "resnet") == 0 ? srv->engine != NULL : 1;
        fputs("faceverify_model_loaded{model=\"", f);
        put_label(f, id);
        fprintf(f, "\"} %d\n", loaded);
    }
    json_decref(arr);
}

static void put_process(FILE *f, const fvs_server *srv) {
    family(f, "faceverify_http_requests_in_flight", "gauge",
           "Requests admitted and not yet answered.");
    fprintf(f, "faceverify_http_requests_in_flight %d\n",
            srv->guard ? fvs_guard_inflight(srv->guard) : 0);
    unsigned long long size = 0, resident = 0;
    FILE *statm = fopen("/proc/self/statm", "r");
    if (statm) {
        if (fscanf(statm, "%llu %llu", &size, &resident) != 2) resident = 0;
        fclose(statm);
    }
    long page = sysconf(_SC_PAGESIZE);
    family(f, "faceverify_process_resident_memory_bytes", "gauge",
           "Resident set size, from /proc/self/statm.");
    fprintf(f, "faceverify_process_resident_memory_bytes %llu\n",
            resident * (unsigned long long)(page > 0 ? page : 4096));
    family(f, "faceverify_build_info", "gauge", "The faceverify version, always 1.");
    fprintf(f, "faceverify_build_info{version=\"%s\"} 1\n", FV_VERSION_STRING);
}

int fvs_metrics_render(const fvs_server *srv, char **text, size_t *len) {
    *text = NULL;
    *len = 0;
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (!f) return -1;
    int rc = srv->metrics ? put_requests(f, srv->metrics) : 0;
    if (!rc) {
        put_process(f, srv);
        put_templates(f, srv);
        put_index(f, srv);
        put_models(f, srv);
    }
    if (fclose(f) || rc || !buf) {
        free(buf);
        return -1;
    }
    *text = buf;
    *len = n;
    return 0;
}

/* ------------------------------------------------------------ log */

void fvs_log_request(const fvs_req *r, int status, double seconds) {
    if (!r->srv || r->srv->cfg.log_format != FVS_LOG_JSON) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + w, sizeof when - w, ".%03dZ", (int)(ts.tv_nsec / 1000000));
    char remote[64];
    fvs_req_remote(r, remote, sizeof remote);
    const char *level = status >= 500 ? "error" : status >= 400 ? "warn" : "info";
    /* The method as counted (a fixed name): a client's own token is not
     * echoed into the log. */
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s?, s:i, s:f, s:s}", "time", when, "level", level,
                          "request_id", r->request_id, "method",
                          method_name(method_index(r->method)), "route", r->route_path, "status",
                          status, "duration_ms", seconds * 1000.0, "remote", remote);
    char *line = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    json_decref(o);
    if (!line) return;
    /* One stdio call a line: glibc locks the stream for it, so lines from
     * request threads never interleave. */
    fprintf(stdout, "%s\n", line);
    fflush(stdout);
    free(line);
}
