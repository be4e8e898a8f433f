/*
 * server.h: faceverifyd's configuration and the few long-lived objects a
 * request needs.  There is no global server struct: main() owns one
 * fvs_server and hands it to the HTTP layer, which passes it to each
 * request.
 */
#ifndef FVS_SERVER_H
#define FVS_SERVER_H

#include <stddef.h>

#include "faceverify.h"
#include "server/guard.h"
#include "server/index.h"
#include "server/metrics.h"
#include "server/models.h"
#include "server/store.h"

/* The config table: every field has a flag and an environment variable
 * (see main.c's usage text and README.md). */
typedef struct fvs_config {
    const char *database_url; /* FACEVERIFY_DATABASE_URL, --database */
    char host[128];           /* --listen HOST:PORT */
    int port;
    int http_threads;        /* FACEVERIFY_HTTP_THREADS, --http-threads; 0: 2 x CPUs */
    int engine_threads;      /* FACEVERIFY_THREADS, --threads; 0: CPUs */
    size_t max_body;         /* FACEVERIFY_MAX_BODY, --max-body (bytes) */
    const char *models_dir;  /* FACEVERIFY_MODELS, --models */
    const char *trained_dir; /* FACEVERIFY_MODELS_DIR, --models-dir: *.fvm (models.h) */
    const char *assets_dir;  /* FACEVERIFY_ASSETS: openapi.json, docs.html, static/ */
    int demo;                /* FACEVERIFY_DEMO=1, --demo: the keyless demo page (demo.c) */
    int max_inflight;        /* FACEVERIFY_MAX_INFLIGHT: requests handled at once; more: 503 */
    uint64_t memory_budget;  /* FACEVERIFY_MEMORY_BUDGET: bytes image requests may reserve */
    int max_connections;     /* FACEVERIFY_MAX_CONNECTIONS: open connections */
    int conn_timeout;        /* FACEVERIFY_CONN_TIMEOUT: idle seconds before a close */
    int request_timeout;     /* FACEVERIFY_REQUEST_TIMEOUT: seconds for headers + body */
    int max_conn_per_ip;     /* FACEVERIFY_MAX_CONNECTIONS_PER_IP: open connections per IP */
    int max_faces;           /* FACEVERIFY_MAX_FACES, --max-faces: faces per photo that
                                /detect lists and /identify searches */
    double rate_limit;       /* FACEVERIFY_RATE_LIMIT: requests/s per key; 0: none */
    double rate_burst;       /* FACEVERIFY_RATE_BURST: bucket size */
    const char *run_as;      /* FACEVERIFY_USER, --user: drop root after binding */
    double min_quality;      /* FACEVERIFY_MIN_QUALITY: enrolment gate of collections without one */
    double default_fmr;      /* FACEVERIFY_DEFAULT_FMR, --default-fmr: verify's operating
                                point where a calibration exists; 0: the fixed threshold */
    double default_fpir;     /* FACEVERIFY_DEFAULT_FPIR, --default-fpir: identify's open-set
                                rate where a calibration exists; 0: the k-NN vote */
    fvs_metrics_mode metrics;  /* FACEVERIFY_METRICS, --metrics, --no-metrics,
                                  --metrics-local-only: who may read GET /metrics */
    fvs_log_format log_format; /* FACEVERIFY_LOG_FORMAT, --log-format: text (no request
                                  lines) or json (one object per request) */
} fvs_config;

/* The default enrolment quality gate (--min-quality): clean LFW faces and
 * phone photos score well above it, a 30 px or heavily blurred face below
 * (the measurements are in the README). */
/* Faces per photo (--max-faces): a crowd of 100 is searched in one
 * request (one embedding batch, ~30 ms a face on one core); the limit
 * keeps one photo from holding a request slot for minutes. */
#define FVS_MAX_FACES_DEFAULT 100
#define FVS_MAX_FACES_LIMIT 1000

#define FVS_MIN_QUALITY_DEFAULT 0.25
#define FVS_MIN_QUALITY_DEFAULT_TEXT "0.25"

typedef struct fvs_server {
    fvs_config cfg;
    fvs_store *store;
    fvs_index *index;
    fvs_guard *guard;
    fv_engine *engine;  /* NULL when the models failed to load (503s) */
    fvs_models *models; /* the ResNet and the trained models collections can use */
    char engine_error[256];
    float default_threshold;
    /* Request counters for GET /metrics (metrics.h); NULL: none kept. */
    fvs_metrics *metrics;
    /* Demo mode (cfg.demo): the per-process token the demo page sends and
     * the collection its requests are bound to. */
    char demo_token[65];
    fvs_collection demo_coll;
} fvs_server;

/* Becomes user (privs.c) when running as root; 0 ok, -1 after a message. */
int fvs_drop_privileges(const char *user);

/* Runs the HTTP server until SIGTERM/SIGINT; returns a process exit code. */
int fvs_http_serve(fvs_server *srv);

#endif
