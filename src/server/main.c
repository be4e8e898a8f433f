/*
 * main.c: faceverifyd's commands and configuration.
 *
 *   faceverifyd migrate                    apply the numbered schema migrations
 *   faceverifyd serve [--listen H:P]       serve the JSON API
 *   faceverifyd createcollection NAME      new tenant; prints its API key last
 *                                          (--model M: its embedding model)
 *   faceverifyd rotatekey NAME             replace a collection's API key
 *   faceverifyd audit [COLLECTION]         print the audit log (JSON lines)
 *   faceverifyd genkey [--out FILE]        a new template key (base64), or into a
 *                                          new 0600 environment file
 *   faceverifyd rekeytemplates             re-seal templates under a new key
 *   faceverifyd encrypttemplates           seal plaintext templates with the key
 *   faceverifyd purge-unreadable [NAME]    list and delete templates that do not
 *                                          open with the key (--dry-run: list)
 *   faceverifyd rebuildindex [NAME]        rebuild search indexes from storage
 *   faceverifyd routes                     print the HTTP route table (JSON)
 *   faceverifyd import COLLECTION DIR      enrol a folder per person (bulk.c)
 *   faceverifyd import COLLECTION --from FILE   a collection from an export
 *   faceverifyd export COLLECTION FILE     a collection into an export file
 *
 * Two tables: COMMANDS (name, what it needs, handler, usage) and CONFIG
 * (each setting's flag and environment variable, flags winning).  main()
 * reads the command line into an invocation (read_args, then
 * apply_config), finds the command and runs it, opening the database for
 * those that need one (with_store).  All commands that use the database
 * read its URL from FACEVERIFY_DATABASE_URL (default: paths.h, SQLite under
 * the repo's var/ for a build-tree daemon, PREFIX/var/lib/faceverify when
 * installed).
 */
#define _XOPEN_SOURCE 700 /* realpath, mkdtemp */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/bulk.h"
#include "server/crypto.h"
#include "server/demo.h"
#include "server/http.h"
#include "server/paths.h"
#include "server/server.h"

/* The command table (COMMANDS), defined below the handlers: its number
 * of rows and row i's lines of this usage text. */
static size_t command_count(void);
static const char *command_usage(size_t i);

static void usage(FILE *f) {
    fvs_paths paths;
    fvs_paths_default(&paths);
    fprintf(f, "usage: faceverifyd COMMAND [options]\n"
               "commands:\n");
    for (size_t i = 0; i < command_count(); i++) fputs(command_usage(i), f);
    fprintf(f,
            "options (environment variable in brackets):\n"
            "  --database URL      sqlite:///path or postgres://... [FACEVERIFY_DATABASE_URL]\n"
            "                      default %s\n"
            "  --listen HOST:PORT  default 127.0.0.1:8000 [FACEVERIFY_LISTEN]\n"
            "  --http-threads N    ignored (one thread per connection) [FACEVERIFY_HTTP_THREADS]\n"
            "  --max-inflight N    requests handled at once; more get 503 + Retry-After,\n"
            "                      default 8 x CPUs, at least 16 [FACEVERIFY_MAX_INFLIGHT]\n"
            "  --memory-budget BYTES  memory image requests may hold at once (estimated from\n"
            "                      the image header); past it a request waits up to 2 s,\n"
            "                      then 503 + Retry-After; default min(RAM / 4,\n"
            "                      3/4 of the cgroup's memory.max, 3 GiB)\n"
            "                      [FACEVERIFY_MEMORY_BUDGET]\n"
            "  --max-connections N open connections, default 512 [FACEVERIFY_MAX_CONNECTIONS]\n"
            "  --conn-timeout S    close a connection idle for S seconds, default 30\n"
            "                      [FACEVERIFY_CONN_TIMEOUT]\n"
            "  --request-timeout S a request's headers must arrive within S seconds of\n"
            "                      the connect, its body within S seconds of the headers,\n"
            "                      default 30 [FACEVERIFY_REQUEST_TIMEOUT]\n"
            "  --max-connections-per-ip N  open connections from one IP address,\n"
            "                      default 128 [FACEVERIFY_MAX_CONNECTIONS_PER_IP]\n"
            "  --rate-limit R      requests per second per API key (\"10\" or \"10/s\"), 0: no\n"
            "                      limit (default) [FACEVERIFY_RATE_LIMIT]\n"
            "  --rate-burst B      requests a key may send at once, default max(1, R)\n"
            "                      [FACEVERIFY_RATE_BURST]\n"
            "  --user NAME         when started as root, become NAME after binding\n"
            "                      [FACEVERIFY_USER]\n"
            "  --threads N         neural network threads, 0: CPUs [FACEVERIFY_THREADS]\n"
            "  --max-body BYTES    largest request body, default 12000000 [FACEVERIFY_MAX_BODY]\n"
            "  --max-faces N       faces per photo: /detect answers the N largest\n"
            "                      (truncated), /identify refuses more (422\n"
            "                      too_many_faces), 1..1000, default 100 [FACEVERIFY_MAX_FACES]\n"
            "  --models DIR        model files [FACEVERIFY_MODELS]\n"
            "  --models-dir DIR    trained models (*.fvm from `faceverify train`) that\n"
            "                      collections can use [FACEVERIFY_MODELS_DIR]\n"
            "  --assets DIR        openapi.json, docs.html, static/ [FACEVERIFY_ASSETS]\n"
            "  --demo              serve the keyless demo page at / on collection 'demo'\n"
            "                      (local use; off by default) [FACEVERIFY_DEMO=1]\n"
            "  --min-quality Q     enrolment quality gate for collections without their\n"
            "                      own, 0..1, default " FVS_MIN_QUALITY_DEFAULT_TEXT
            " [FACEVERIFY_MIN_QUALITY]\n"
            "  --index-backend B   exact (default), exact-int8, faiss-flat, faiss-hnsw,\n"
            "                      faiss-ivfpq [FACEVERIFY_INDEX_BACKEND]\n"
            "  --index-dir DIR     persist search indexes here; default: memory only\n"
            "                      [FACEVERIFY_INDEX_DIR]\n"
            "  --index-sync MODE   request (check storage before each search, default) or\n"
            "                      notify (PostgreSQL LISTEN/NOTIFY) [FACEVERIFY_INDEX_SYNC]\n"
            "  --index-reconcile S seconds between change-log reconciles, default 30\n"
            "                      [FACEVERIFY_INDEX_RECONCILE]\n"
            "  --index-changes-keep N  change-log rows kept per collection (a node further\n"
            "                      behind rebuilds from storage), default 100000; 0: all\n"
            "                      [FACEVERIFY_INDEX_CHANGES_KEEP]\n"
            "  --metrics MODE      GET /metrics (Prometheus text format, no key): on\n"
            "                      (default), local (loopback clients only; others get\n"
            "                      404) or off (404) [FACEVERIFY_METRICS]\n"
            "  --no-metrics        the same as --metrics off\n"
            "  --metrics-local-only  the same as --metrics local\n"
            "  --log-format F      text (default: no per-request lines) or json (one JSON\n"
            "                      object per request on stdout: time, level, request_id,\n"
            "                      method, route, status, duration_ms, remote)\n"
            "                      [FACEVERIFY_LOG_FORMAT]\n"
            "  --default-fmr F     verify's default operating point: false-match rate F\n"
            "                      (1e-6..0.1) for models with a calibration, default 0.001;\n"
            "                      0: the model's fixed threshold [FACEVERIFY_DEFAULT_FMR]\n"
            "  --default-fpir F    identify's default: open set at false-positive\n"
            "                      identification rate F (0.001..0.1) for models with a\n"
            "                      calibration, default 0.01; 0: the k-NN vote\n"
            "                      [FACEVERIFY_DEFAULT_FPIR]\n"
            "environment only:\n"
            "  FACEVERIFY_TEMPLATE_KEY  base64 of 32 bytes: templates are stored encrypted\n"
            "                      (XChaCha20-Poly1305); needed to read encrypted ones\n"
            "  FACEVERIFY_TEMPLATE_KEY_OLD  the key rekeytemplates re-seals from\n",
            paths.db_url);
}

static int parse_listen(const char *s, fvs_config *cfg) {
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof cfg->host) return -1;
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port < 0 || port > 65535) return -1;
    memcpy(cfg->host, s, (size_t)(colon - s));
    cfg->host[colon - s] = 0;
    cfg->port = (int)port;
    return 0;
}

static int parse_size(const char *s, long long lo, long long hi, long long *out) {
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* A number in [lo, hi] (or exactly 0 when zero_ok: "off").  A rate's
 * bounds get a relative slack of 1e-9, so "1e-6" is never refused for
 * rounding. */
static int parse_real(const char *s, double lo, double hi, int zero_ok, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) return -1;
    if (!(zero_ok && v == 0) && !(v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9))) return -1;
    *out = v;
    return 0;
}

/* "R" or "R/s": requests per second, 0 (no limit) to 1e6. */
static int parse_rate(const char *s, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !(v >= 0 && v <= 1e6)) return -1;
    if (*end && strcmp(end, "/s") != 0) return -1;
    *out = v;
    return 0;
}

/* One row per setting: flag, environment variable, and where it goes. */
typedef enum {
    OPT_DB,
    OPT_LISTEN,
    OPT_HTTP_THREADS,
    OPT_THREADS,
    OPT_MAX_BODY,
    OPT_MODELS,
    OPT_ASSETS,
    OPT_THRESHOLD,
    OPT_DEMO,
    OPT_MAX_INFLIGHT,
    OPT_MEMORY_BUDGET,
    OPT_MAX_CONNECTIONS,
    OPT_CONN_TIMEOUT,
    OPT_RATE_LIMIT,
    OPT_RATE_BURST,
    OPT_USER,
    OPT_LIMIT,
    OPT_INDEX_BACKEND,
    OPT_INDEX_DIR,
    OPT_INDEX_SYNC,
    OPT_INDEX_RECONCILE,
    OPT_INDEX_CHANGES_KEEP,
    OPT_MODELS_DIR,
    OPT_MODEL,
    OPT_OUT,
    OPT_REQUEST_TIMEOUT,
    OPT_MAX_CONN_PER_IP,
    OPT_DEFAULT_FMR,
    OPT_DEFAULT_FPIR,
    OPT_FMR,
    OPT_FPIR,
    OPT_MIN_QUALITY,
    OPT_FROM,
    OPT_METRICS,
    OPT_LOG_FORMAT,
    OPT_MAX_FACES,
    OPT_COUNT
} opt_id;
static const struct {
    const char *flag, *env;
} CONFIG[OPT_COUNT] = {
    [OPT_DB] = {"--database", "FACEVERIFY_DATABASE_URL"},
    [OPT_LISTEN] = {"--listen", "FACEVERIFY_LISTEN"},
    [OPT_HTTP_THREADS] = {"--http-threads", "FACEVERIFY_HTTP_THREADS"},
    [OPT_THREADS] = {"--threads", "FACEVERIFY_THREADS"},
    [OPT_MAX_BODY] = {"--max-body", "FACEVERIFY_MAX_BODY"},
    [OPT_MODELS] = {"--models", "FACEVERIFY_MODELS"},
    [OPT_ASSETS] = {"--assets", "FACEVERIFY_ASSETS"},
    [OPT_THRESHOLD] = {"--threshold", NULL},
    [OPT_DEMO] = {"--demo", "FACEVERIFY_DEMO"}, /* a switch: --demo alone means 1 */
    [OPT_MAX_INFLIGHT] = {"--max-inflight", "FACEVERIFY_MAX_INFLIGHT"},
    [OPT_MEMORY_BUDGET] = {"--memory-budget", "FACEVERIFY_MEMORY_BUDGET"},
    [OPT_MAX_CONNECTIONS] = {"--max-connections", "FACEVERIFY_MAX_CONNECTIONS"},
    [OPT_CONN_TIMEOUT] = {"--conn-timeout", "FACEVERIFY_CONN_TIMEOUT"},
    [OPT_RATE_LIMIT] = {"--rate-limit", "FACEVERIFY_RATE_LIMIT"},
    [OPT_RATE_BURST] = {"--rate-burst", "FACEVERIFY_RATE_BURST"},
    [OPT_USER] = {"--user", "FACEVERIFY_USER"},
    [OPT_LIMIT] = {"--limit", NULL},
    [OPT_INDEX_BACKEND] = {"--index-backend", "FACEVERIFY_INDEX_BACKEND"},
    [OPT_INDEX_DIR] = {"--index-dir", "FACEVERIFY_INDEX_DIR"},
    [OPT_INDEX_SYNC] = {"--index-sync", "FACEVERIFY_INDEX_SYNC"},
    [OPT_INDEX_RECONCILE] = {"--index-reconcile", "FACEVERIFY_INDEX_RECONCILE"},
    [OPT_INDEX_CHANGES_KEEP] = {"--index-changes-keep", "FACEVERIFY_INDEX_CHANGES_KEEP"},
    [OPT_MODELS_DIR] = {"--models-dir", "FACEVERIFY_MODELS_DIR"},
    [OPT_MODEL] = {"--model", NULL},
    [OPT_OUT] = {"--out", NULL},
    [OPT_REQUEST_TIMEOUT] = {"--request-timeout", "FACEVERIFY_REQUEST_TIMEOUT"},
    [OPT_MAX_CONN_PER_IP] = {"--max-connections-per-ip", "FACEVERIFY_MAX_CONNECTIONS_PER_IP"},
    [OPT_DEFAULT_FMR] = {"--default-fmr", "FACEVERIFY_DEFAULT_FMR"},
    [OPT_DEFAULT_FPIR] = {"--default-fpir", "FACEVERIFY_DEFAULT_FPIR"},
    [OPT_FMR] = {"--fmr", NULL},
    [OPT_FPIR] = {"--fpir", NULL},
    [OPT_MIN_QUALITY] = {"--min-quality", "FACEVERIFY_MIN_QUALITY"},
    [OPT_FROM] = {"--from", NULL},
    /* --no-metrics and --metrics-local-only are switches for two values */
    [OPT_METRICS] = {"--metrics", "FACEVERIFY_METRICS"},
    [OPT_LOG_FORMAT] = {"--log-format", "FACEVERIFY_LOG_FORMAT"},
    [OPT_MAX_FACES] = {"--max-faces", "FACEVERIFY_MAX_FACES"},
};

/* One run of faceverifyd as the command line and the environment asked for
 * it: the command, its NAME, and the settings of CONFIG, parsed. */
typedef struct invocation {
    const char *cmd, *name;
    const char *arg; /* a second operand: import's DIR, export's FILE */
    fvs_config cfg;
    fvs_index_config icfg;
    int if_missing;        /* createcollection --if-missing */
    int dry_run;           /* purge-unreadable --dry-run */
    int force, largest;    /* import --force, --largest */
    int json, merge;       /* import --json, --merge */
    int quality_flagged;   /* --min-quality was a flag */
    double threshold;      /* createcollection --threshold; 0: none */
    double fmr, fpir;      /* createcollection --fmr, --fpir; 0: none */
    double min_quality;    /* createcollection --min-quality; < 0: none */
    long long audit_limit; /* audit --limit */
    const char *model;     /* createcollection --model */
    const char *out;       /* genkey --out */
    const char *from;      /* fetch-models --from */
    int backend_flagged;   /* --index-backend was a flag, not the environment */
    fvs_paths paths;       /* default files; cfg points into it */
} invocation;

/* Makes the folders of a SQLite file (var/, PREFIX/var/lib/faceverify)
 * so that a first run works without setup. */
static void make_sqlite_dir(const char *url) {
    char err[PATH_MAX + 128];
    if (fvs_paths_prepare_sqlite(url, err, sizeof err)) fprintf(stderr, "faceverifyd: %s\n", err);
}

static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > FVS_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
    return 1;
}

static int cmd_migrate(const invocation *inv, fvs_store *st) {
    (void)inv;
    char err[512];
    int applied = 0, version = 0;
    if (fvs_store_migrate(st, &applied, err, sizeof err) ||
        fvs_store_schema_version(st, &version, err, sizeof err)) {
        fprintf(stderr, "faceverifyd: migrate: %s\n", err);
        return 1;
    }
    printf("faceverifyd: %s schema at version %d (%d migration%s applied)\n", fvs_store_backend(st),
           version, applied, applied == 1 ? "" : "s");
    return 0;
}

static int need_schema(fvs_store *st) {
    char err[512];
    int version = 0;
    if (fvs_store_schema_version(st, &version, err, sizeof err)) {
        fprintf(stderr, "faceverifyd: %s\n", err);
        return 1;
    }
    if (version < fvs_store_latest_version()) {
        fprintf(stderr,
                "faceverifyd: database schema is at version %d, need %d: run "
                "'faceverifyd migrate'\n",
                version, fvs_store_latest_version());
        return 1;
    }
    return 0;
}

/* The id of the model a collection is created with: a name the registry
 * of --models-dir knows (models.h), or a model file's path.  NULL after a
 * message. */
static const char *resolve_model(const char *spec, const char *dir, fvs_models **reg,
                                 fv_model **file) {
    char err[512];
    const char *id = NULL;
    const fv_model *m = NULL;
    *reg = fvs_models_load(dir, err, sizeof err);
    if (!*reg) {
        fprintf(stderr, "faceverifyd: %s\n", err);
        return NULL;
    }
    if (fvs_models_find(*reg, spec, &id, &m) == 0) return id;
    if (strchr(spec, '/')) {
        fv_status s = fv_model_load(spec, file, err, sizeof err);
        if (s == FV_OK) {
            fprintf(stderr,
                    "faceverifyd: note: serve with --models-dir naming the folder of %s, or "
                    "requests on this collection answer 503 model_unavailable\n",
                    spec);
            return fv_model_id(*file);
        }
        fprintf(stderr, "faceverifyd: --model: %s\n", err);
        return NULL;
    }
    fprintf(stderr, "faceverifyd: --model: no model named '%s' (%s, or a *.fvm in %s)\n", spec,
            FV_MODEL_ID, dir && *dir ? dir : "--models-dir, which is not set");
    return NULL;
}

/* createcollection and rotatekey: a new key for NAME (a new collection
 * with tmpl's threshold, model, backend and policy, or an existing one's
 * replaced). */
static int make_key(fvs_store *st, const char *name, int rotate, const fvs_collection *tmpl,
                    int if_missing) {
    if (!name || !valid_name(name)) {
        fprintf(stderr, "faceverifyd: a collection NAME (1..%d printable characters) is needed\n",
                FVS_NAME_MAX);
        return 2;
    }
    if (need_schema(st)) return 1;
    char key[FVS_KEY_MAX], prefix[FVS_KEY_PREFIX_LEN + 1], err[512];
    unsigned char hash[FVS_KEY_HASH_BYTES];
    if (!rotate && if_missing) {
        int exists = 0;
        if (fvs_collection_exists(st, name, &exists, err, sizeof err)) {
            fprintf(stderr, "faceverifyd: %s\n", err);
            return 1;
        }
        if (exists) {
            fprintf(stderr,
                    "faceverifyd: collection '%s' exists; its key was shown when it was "
                    "created (faceverifyd rotatekey %s makes a new one)\n",
                    name, name);
            return 0;
        }
    }
    fvs_key_generate(key, prefix, hash);
    int rc;
    int64_t id = 0;
    if (rotate)
        rc = fvs_collection_set_key(st, name, prefix, hash, err, sizeof err);
    else {
        fvs_collection c = *tmpl;
        snprintf(c.name, sizeof c.name, "%s", name);
        rc = fvs_collection_create(st, &c, prefix, hash, &id, err, sizeof err);
    }
    if (rc < 0) {
        fprintf(stderr, "faceverifyd: %s\n", err);
        return 1;
    }
    if (rc > 0) {
        fprintf(stderr, "faceverifyd: %s\n",
                rotate ? "no such collection" : "a collection with that name exists");
        return 1;
    }
    if (rotate)
        printf("new API key for collection '%s' (the old one no longer works; shown once):\n",
               name);
    else
        printf("created collection '%s' (id %lld); its API key (shown once):\n", name,
               (long long)id);
    printf("%s\n", key);
    return 0;
}

static int cmd_audit(const invocation *inv, fvs_store *st) {
    if (need_schema(st)) return 1;
    json_t *res = NULL;
    char err[512];
    if (fvs_audit_list(st, 0, inv->name, inv->audit_limit, 0, &res, err, sizeof err)) {
        fprintf(stderr, "faceverifyd: audit: %s\n", err);
        return 1;
    }
    size_t i;
    json_t *e;
    json_array_foreach(res, i, e) {
        char *line = json_dumps(e, JSON_COMPACT | JSON_SORT_KEYS);
        if (line) printf("%s\n", line);
        free(line);
    }
    json_decref(res);
    return 0;
}

static int cmd_encrypt(const invocation *inv, fvs_store *st) {
    (void)inv;
    if (need_schema(st)) return 1;
    int64_t done = 0;
    char err[512];
    int rc = fvs_store_encrypt_templates(st, &done, err, sizeof err);
    printf("faceverifyd: %lld plaintext template%s encrypted\n", (long long)done,
           done == 1 ? "" : "s");
    if (rc) {
        fprintf(stderr, "faceverifyd: encrypttemplates: %s\n", err);
        return 1;
    }
    return 0;
}

/* Re-seals every template under FACEVERIFY_TEMPLATE_KEY (the new key)
 * from FACEVERIFY_TEMPLATE_KEY_OLD; with_store checked both. */
static int cmd_rekey(const invocation *inv, fvs_store *st) {
    if (need_schema(st)) return 1;
    unsigned char old_key[FVS_TKEY_BYTES];
    char err[512];
    const char *old_b64 = getenv("FACEVERIFY_TEMPLATE_KEY_OLD");
    if (!old_b64 || !*old_b64) {
        fprintf(stderr, "faceverifyd: rekeytemplates: set FACEVERIFY_TEMPLATE_KEY_OLD (the key "
                        "the templates are sealed with now)\n");
        return 2;
    }
    if (fvs_tkey_parse(old_b64, old_key, err, sizeof err)) {
        fprintf(stderr, "faceverifyd: rekeytemplates: FACEVERIFY_TEMPLATE_KEY_OLD: %s\n", err);
        return 2;
    }
    (void)inv;
    int64_t done = 0, bad = 0;
    int rc = fvs_store_rekey_templates(st, old_key, &done, &bad, err, sizeof err);
    sodium_memzero(old_key, sizeof old_key);
    if (rc) {
        fprintf(stderr,
                "faceverifyd: rekeytemplates: %s (nothing changed in the collection "
                "that failed)\n",
                err);
        return 1;
    }
    printf("faceverifyd: %lld template%s re-sealed under the new key", (long long)done,
           done == 1 ? "" : "s");
    if (bad)
        printf("; %lld open%s with neither key (faceverifyd purge-unreadable)", (long long)bad,
               bad == 1 ? "s" : "");
    printf("\n");
    return 0;
}

typedef struct find_ctx {
    const char *name;
    int64_t id;
} find_ctx;

static int find_collection(void *ctx, const fvs_collection *c) {
    find_ctx *f = ctx;
    if (strcmp(c->name, f->name) == 0) f->id = c->id;
    return 0;
}

/* Lists (one JSON object a line: collection_id, subject_id, face_id) the
 * templates of collection NAME (or of all) that do not open with
 * FACEVERIFY_TEMPLATE_KEY (lost or replaced key, altered rows) and,
 * unless --dry-run, deletes them, each delete in the collection's audit
 * log as face.purge_unreadable.  The readable ones are never touched. */
static int cmd_purge_unreadable(const invocation *inv, fvs_store *st) {
    if (need_schema(st)) return 1;
    char err[512], why[256] = "";
    find_ctx f = {inv->name, 0};
    if (inv->name && fvs_collection_each(st, find_collection, &f, err, sizeof err)) {
        fprintf(stderr, "faceverifyd: %s\n", err);
        return 1;
    }
    if (inv->name && !f.id) {
        fprintf(stderr, "faceverifyd: no such collection\n");
        return 1;
    }
    fvs_bad_template *bad = NULL;
    size_t n = 0;
    if (fvs_store_unreadable(st, f.id, !inv->dry_run, &bad, &n, why, sizeof why, err, sizeof err)) {
        fprintf(stderr, "faceverifyd: purge-unreadable: %s\n", err);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        printf("{\"collection_id\":%lld,\"subject_id\":%lld,\"face_id\":%lld}\n",
               (long long)bad[i].coll, (long long)bad[i].subject, (long long)bad[i].face);
        if (inv->dry_run) continue;
        /* No key prefix: the operator, not a key holder, did it. */
        fvs_audit_entry e = {
            bad[i].coll, NULL, "face.purge_unreadable", bad[i].subject, bad[i].face, NULL, 200,
            "ok",        NULL};
        if (fvs_audit_write(st, &e, err, sizeof err)) {
            fprintf(stderr, "faceverifyd: audit log: %s\n", err);
            rc = 1;
        }
    }
    printf("faceverifyd: %zu unreadable template%s %s%s%s\n", n, n == 1 ? "" : "s",
           inv->dry_run ? "found" : "deleted", n ? ": " : "", n ? why : "");
    free(bad);
    return rc;
}

static void report_rebuilt(void *ctx, const fvs_collection *c, const char *backend) {
    (void)ctx;
    printf("faceverifyd: rebuilt %s: %s index, model %s\n", c->name, backend, c->model);
}

static int cmd_rebuildindex(const invocation *inv, fvs_store *st) {
    const fvs_index_config *icfg = &inv->icfg;
    const char *name = inv->name;
    if (need_schema(st)) return 1;
    char err[512];
    find_ctx f = {name, 0};
    if (name && fvs_collection_each(st, find_collection, &f, err, sizeof err)) {
        fprintf(stderr, "faceverifyd: %s\n", err);
        return 1;
    }
    if (name && !f.id) {
        fprintf(stderr, "faceverifyd: no such collection\n");
        return 1;
    }
    fvs_index *ix = fvs_index_create(st, icfg);
    int built = 0;
    int rc = ix ? fvs_index_rebuild(ix, f.id, report_rebuilt, NULL, &built, err, sizeof err) : -1;
    if (rc) fprintf(stderr, "faceverifyd: rebuildindex: %s\n", ix ? err : "out of memory");
    fvs_index_destroy(ix);
    if (rc) return 1;
    printf("faceverifyd: rebuilt %d index%s%s%s\n", built, built == 1 ? "" : "es",
           icfg->dir ? " in " : " (no --index-dir: not saved)", icfg->dir ? icfg->dir : "");
    return 0;
}

/* createcollection's policy options: --threshold or --fmr (a fixed
 * threshold would outrank the rate), --fmr only for a calibrated model.
 * 0 ok, 2 after a message. */
static int check_policy(const invocation *inv, const char *model) {
    if (inv->threshold > 0 && inv->fmr > 0) {
        fprintf(stderr, "faceverifyd: give --threshold or --fmr, not both\n");
        return 2;
    }
    float t = 0;
    if (inv->fmr > 0 && fv_fmr_threshold(model, inv->fmr, 1.0f, &t) != FV_OK) {
        fprintf(stderr, "faceverifyd: --fmr: no false-match-rate calibration for model %s\n",
                model ? model : FV_MODEL_ID);
        return 2;
    }
    return 0;
}

/* createcollection and rotatekey: the model (--model) resolved, then the
 * key made; rotatekey refuses a model, backend or policy rather
 * than ignore it. */
static int cmd_collection(const invocation *inv, fvs_store *st) {
    int rotate = strcmp(inv->cmd, "rotatekey") == 0;
    if (rotate && (inv->model || inv->backend_flagged || inv->fmr > 0 || inv->fpir > 0 ||
                   inv->min_quality >= 0 || inv->threshold > 0)) {
        fprintf(stderr, "faceverifyd: rotatekey only replaces the key; change a collection's "
                        "model, backend or policy with PATCH /api/v1/collection\n");
        return 2;
    }
    fvs_models *reg = NULL;
    fv_model *file = NULL;
    const char *model = NULL;
    int rc = 0;
    if (inv->model && !(model = resolve_model(inv->model, inv->cfg.trained_dir, &reg, &file)))
        rc = 2;
    /* createcollection --index-backend B: the collection's own backend
     * (only as a flag: FACEVERIFY_INDEX_BACKEND is the server's). */
    const char *backend = inv->backend_flagged ? fvsearch_kind_name(inv->icfg.backend) : NULL;
    if (!rc && !rotate) rc = check_policy(inv, model);
    fvs_collection c = {0};
    c.threshold = inv->threshold;
    snprintf(c.model, sizeof c.model, "%s", model ? model : "");
    snprintf(c.index_backend, sizeof c.index_backend, "%s", backend ? backend : "");
    c.fmr = inv->fmr;
    c.fpir = inv->fpir;
    c.min_quality = inv->min_quality;
    if (!rc) rc = make_key(st, inv->name, rotate, &c, inv->if_missing);
    fv_model_destroy(file);
    fvs_models_destroy(reg);
    return rc;
}

/* A new random template key (base64); needs no database.  Without --out
 * it is printed (and how to keep it, on stderr); with --out FILE it goes
 * into a new file of mode 0600 as an environment file line
 * (FACEVERIFY_TEMPLATE_KEY=...: systemd's EnvironmentFile= reads it), never
 * over an existing file or through a symlink. */
static int cmd_genkey(const invocation *inv, fvs_store *st) {
    (void)st;
    char b64[64];
    fvs_tkey_generate(b64, sizeof b64);
    if (!inv->out) {
        printf("%s\n", b64);
        sodium_memzero(b64, sizeof b64);
        fprintf(stderr, "faceverifyd: keep this key in a secrets manager, or use 'genkey --out "
                        "FILE' (a new 0600 file); losing it loses every template sealed with "
                        "it\n");
        return 0;
    }
    int fd = open(inv->out, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "faceverifyd: genkey: %s: %s%s\n", inv->out, strerror(errno),
                errno == EEXIST ? " (a key file is never overwritten)" : "");
        sodium_memzero(b64, sizeof b64);
        return 1;
    }
    char line[128];
    int len = snprintf(line, sizeof line, "FACEVERIFY_TEMPLATE_KEY=%s\n", b64);
    int ok = len > 0 && write(fd, line, (size_t)len) == len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    sodium_memzero(b64, sizeof b64);
    sodium_memzero(line, sizeof line);
    if (!ok) {
        fprintf(stderr, "faceverifyd: genkey: cannot write %s: %s\n", inv->out, strerror(errno));
        unlink(inv->out);
        return 1;
    }
    printf("faceverifyd: template key written to %s (mode 0600); load it with systemd's "
           "EnvironmentFile=%s, or: set -a; . %s; set +a\n",
           inv->out, inv->out, inv->out);
    return 0;
}

/* Puts the three model files where this daemon reads them (--models,
 * $FACEVERIFY_MODELS, or the install's share/faceverify) by running the
 * fetch script (paths.h), which downloads face_recognition_models 0.3.0
 * from PyPI, or reads the copy --from names, and checks every SHA-256;
 * then MTCNN's weights for the default detector (a warning when it
 * fails: detection then falls back to MMOD; facenet-pytorch's wheel from
 * PyPI, converted with numpy).  The downloads go to a private temporary folder, removed
 * afterwards. */
static int cmd_fetch_models(const invocation *inv, fvs_store *st) {
    (void)st;
    const char *dest = fv_models_dir(inv->cfg.models_dir);
    char from[PATH_MAX], cache[] = "/tmp/faceverify-models.XXXXXX";
    if (inv->from && !realpath(inv->from, from)) {
        fprintf(stderr, "faceverifyd: fetch-models: --from %s: %s\n", inv->from, strerror(errno));
        return 2;
    }
    if (access(inv->paths.fetch, R_OK) != 0) {
        fprintf(stderr, "faceverifyd: fetch-models: %s: %s\n", inv->paths.fetch, strerror(errno));
        return 1;
    }
    if (!mkdtemp(cache)) {
        fprintf(stderr, "faceverifyd: fetch-models: %s: %s\n", cache, strerror(errno));
        return 1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (setenv("FACEVERIFY_MODELS", dest, 1) || setenv("FACEVERIFY_MODELS_CACHE", cache, 1) ||
            (inv->from && setenv("FACEVERIFY_MODELS_SDIST", from, 1)))
            _exit(127);
        execl("/bin/bash", "bash", inv->paths.fetch, (char *)NULL);
        fprintf(stderr, "faceverifyd: fetch-models: /bin/bash: %s\n", strerror(errno));
        _exit(127);
    }
    int status = 0;
    if (pid > 0)
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    char sdist[sizeof cache + 64];
    snprintf(sdist, sizeof sdist, "%s/face_recognition_models-0.3.0.tar.gz", cache);
    unlink(sdist);
    rmdir(cache);
    if (pid < 0) {
        fprintf(stderr, "faceverifyd: fetch-models: fork: %s\n", strerror(errno));
        return 1;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}

/* The route table (routes.c) as JSON, one route a line, for tooling and
 * the test that holds it against openapi.json. */
static int cmd_routes(const invocation *inv, fvs_store *st) {
    (void)inv;
    (void)st;
    json_t *routes = fvs_routes_json();
    size_t i;
    json_t *rt;
    json_array_foreach(routes, i, rt) {
        char *line = json_dumps(rt, JSON_COMPACT | JSON_SORT_KEYS);
        if (!line) break;
        printf("%s\n", line);
        free(line);
    }
    int ok = routes && i == json_array_size(routes);
    json_decref(routes);
    if (!ok) fprintf(stderr, "faceverifyd: routes: out of memory\n");
    return ok ? 0 : 1;
}

/* ------------------------------------------------------------ bulk */

/* The options of import and export (bulk.h) from the invocation. */
static void bulk_opts(const invocation *inv, fvs_bulk_opts *o) {
    memset(o, 0, sizeof *o);
    o->collection = inv->name;
    o->models_dir = inv->cfg.models_dir;
    o->trained_dir = inv->cfg.trained_dir;
    o->icfg = &inv->icfg;
    /* a --min-quality flag is this import's gate; otherwise the
     * collection's, else the server default (FACEVERIFY_MIN_QUALITY) */
    o->min_quality = inv->quality_flagged ? inv->cfg.min_quality : -1;
    o->gate_default = inv->cfg.min_quality;
    o->threads = inv->cfg.engine_threads;
    o->max_bytes = inv->cfg.max_body;
    o->force = inv->force;
    o->largest = inv->largest;
    o->json = inv->json;
    o->merge = inv->merge;
}

/* import COLLECTION DIR, or import COLLECTION --from FILE. */
static int cmd_import(const invocation *inv, fvs_store *st) {
    if (!inv->name || !valid_name(inv->name) || !(inv->from ? !inv->arg : inv->arg != NULL)) {
        fprintf(stderr, "faceverifyd: usage: faceverifyd import COLLECTION DIR, or import "
                        "COLLECTION --from FILE\n");
        return 2;
    }
    if (need_schema(st)) return 1;
    fvs_bulk_opts o;
    bulk_opts(inv, &o);
    return inv->from ? fvs_bulk_import_file(st, &o, inv->from)
                     : fvs_bulk_import_dir(st, &o, inv->arg);
}

/* export COLLECTION FILE. */
static int cmd_export(const invocation *inv, fvs_store *st) {
    if (!inv->name || !inv->arg) {
        fprintf(stderr, "faceverifyd: usage: faceverifyd export COLLECTION FILE\n");
        return 2;
    }
    if (need_schema(st)) return 1;
    fvs_bulk_opts o;
    bulk_opts(inv, &o);
    return fvs_bulk_export(st, &o, inv->arg);
}

/* ------------------------------------------------------------ serve */

/* Frees what serve_setup made (each part may be NULL). */
static void serve_teardown(fvs_server *srv) {
    fv_engine_destroy(srv->engine);
    fvs_index_destroy(srv->index);
    fvs_models_destroy(srv->models);
    fvs_metrics_destroy(srv->metrics);
}

/* Everything a request needs: the trained models, the search index, the
 * engine (its failure is a warning: image endpoints then answer 503) and
 * demo mode.  0 ok; 1 after a message, with what was made undone. */
static int serve_setup(fvs_server *srv, const invocation *inv, fvs_store *st) {
    const fvs_config *cfg = &inv->cfg;
    memset(srv, 0, sizeof *srv);
    srv->cfg = *cfg;
    srv->store = st;
    char ierr[512];
    srv->metrics = fvs_metrics_create();
    if (!srv->metrics) {
        fprintf(stderr, "faceverifyd: out of memory\n");
        return 1;
    }
    srv->models = fvs_models_load(cfg->trained_dir, ierr, sizeof ierr);
    if (!srv->models) {
        fprintf(stderr, "faceverifyd: %s\n", ierr);
        serve_teardown(srv);
        return 1;
    }
    srv->index = fvs_index_create(st, &inv->icfg);
    if (!srv->index || fvs_index_start(srv->index, ierr, sizeof ierr)) {
        fprintf(stderr, "faceverifyd: search index: %s\n", srv->index ? ierr : "out of memory");
        serve_teardown(srv);
        return 1;
    }
    fv_config ec;
    fv_config_init(&ec);
    ec.models_dir = cfg->models_dir;
    ec.threads = cfg->engine_threads;
    fv_status s = fv_engine_create(&ec, &srv->engine, srv->engine_error, sizeof srv->engine_error);
    if (s != FV_OK) {
        srv->engine = NULL;
        fprintf(stderr,
                "faceverifyd: warning: models not loaded (%s): image endpoints answer 503\n",
                srv->engine_error);
    }
    srv->default_threshold = srv->engine ? fv_engine_threshold(srv->engine) : 0.6f;
    if (cfg->demo) {
        char err[512];
        if (fvs_demo_init(srv, err, sizeof err)) {
            fprintf(stderr, "faceverifyd: demo: %s\n", err);
            serve_teardown(srv);
            return 1;
        }
        printf("faceverifyd: demo page on http://%s:%d/ (collection '%s', no key needed)\n",
               strcmp(cfg->host, "0.0.0.0") ? cfg->host : "127.0.0.1", cfg->port,
               srv->demo_coll.name);
    }
    return 0;
}

/* Serves the API on the migrated database until SIGTERM/SIGINT. */
static int cmd_serve(const invocation *inv, fvs_store *st) {
    if (need_schema(st)) return 1;
#ifdef M_ARENA_MAX
    /* One thread per connection: glibc would give each new thread its own
     * malloc arena (up to 8 x CPUs), and RSS crept up for minutes under
     * steady load (bench/load_soak.py: +7% over the second half of 180 s,
     * 385 MB after an overload burst).  Two arenas keep it flat (+2%, 123
     * MB) at no cost visible in latency: requests spend their time in the
     * network, not in malloc.  MALLOC_ARENA_MAX in the environment wins. */
    if (!getenv("MALLOC_ARENA_MAX")) mallopt(M_ARENA_MAX, 2);
#endif
    fvs_server srv;
    if (serve_setup(&srv, inv, st)) return 1;
    int rc = fvs_http_serve(&srv);
    serve_teardown(&srv);
    return rc;
}

/* ------------------------------------------------------------ commands */

typedef struct command {
    const char *name;
    int needs_store; /* runs on the open database (with_store) */
    int (*run)(const invocation *inv, fvs_store *st);
    const char *usage; /* its lines of the usage text */
} command;

static const command COMMANDS[] = {
    {"migrate", 1, cmd_migrate,
     "  migrate                  create or upgrade the database schema\n"},
    {"serve", 1, cmd_serve, "  serve                    serve the HTTP/JSON API\n"},
    {"createcollection", 1, cmd_collection,
     "  createcollection NAME    create a collection; its API key is the last line\n"
     "                           (--threshold T overrides the decision threshold;\n"
     "                           --fmr F instead: verify at false-match rate F;\n"
     "                           --fpir P: identify's rate, --min-quality Q: the\n"
     "                           enrolment gate, both stored for their features;\n"
     "                           --model M: embed with model M of --models-dir, by\n"
     "                           file name without .fvm or id, or a .fvm file's path;\n"
     "                           default " FV_MODEL_ID "; --index-backend B: its search backend,\n"
     "                           default the server's; --if-missing: do nothing if\n"
     "                           NAME exists)\n"},
    {"rotatekey", 1, cmd_collection,
     "  rotatekey NAME           replace a collection's API key (prints the new one)\n"},
    {"fetch-models", 0, cmd_fetch_models,
     "  fetch-models             download dlib's model files from PyPI into the models\n"
     "                           folder (--models) and check their SHA-256 (--from FILE:\n"
     "                           a copy of face_recognition_models-0.3.0.tar.gz instead)\n"},
    {"genkey", 0, cmd_genkey,
     "  genkey                   print a new random template key (base64) for\n"
     "                           FACEVERIFY_TEMPLATE_KEY (--out FILE: write it into a\n"
     "                           new 0600 environment file instead; never overwrites)\n"},
    {"rekeytemplates", 1, cmd_rekey,
     "  rekeytemplates           re-seal every template under FACEVERIFY_TEMPLATE_KEY\n"
     "                           (the new key) from FACEVERIFY_TEMPLATE_KEY_OLD, one\n"
     "                           transaction per collection\n"},
    {"encrypttemplates", 1, cmd_encrypt,
     "  encrypttemplates         seal every plaintext template with\n"
     "                           FACEVERIFY_TEMPLATE_KEY\n"},
    {"purge-unreadable", 1, cmd_purge_unreadable,
     "  purge-unreadable [NAME]  list and delete the templates of collection NAME (or\n"
     "                           of all) that do not open with FACEVERIFY_TEMPLATE_KEY,\n"
     "                           audited (--dry-run: only list them)\n"},
    {"audit", 1, cmd_audit,
     "  audit [COLLECTION]       print the audit log, newest first, one JSON object a\n"
     "                           line (--limit N, default 100)\n"},
    {"rebuildindex", 1, cmd_rebuildindex,
     "  rebuildindex [NAME]      rebuild the search index of one collection (or all)\n"
     "                           from storage and save it in the index dir\n"},
    {"import", 1, cmd_import,
     "  import COLLECTION DIR    enrol a folder per person (folder name: subject, made\n"
     "                           if missing; each file in it: one photo), in parallel\n"
     "                           (--threads N), with the API's rules: quality gate\n"
     "                           (--min-quality Q, --force), one face per photo\n"
     "                           (--largest: the largest of several), duplicate\n"
     "                           warnings; photos already enrolled are skipped; ends\n"
     "                           with every reject and why (--json: one JSON report);\n"
     "                           exit 3 when some were rejected\n"
     "  import COLLECTION --from FILE  import an export file into a new collection\n"
     "                           (its API key is printed), or with --merge into an\n"
     "                           existing one, subjects matched by name\n"},
    {"export", 1, cmd_export,
     "  export COLLECTION FILE   write the collection's settings, subjects, faces and\n"
     "                           templates to a new file (mode 0600; templates sealed\n"
     "                           when FACEVERIFY_TEMPLATE_KEY is set; docs/export-format.md)\n"},
    {"routes", 0, cmd_routes,
     "  routes                   print the HTTP route table, one JSON object a line\n"
     "                           (method, path, auth, audit)\n"},
};

static size_t command_count(void) {
    return sizeof COMMANDS / sizeof COMMANDS[0];
}

static const char *command_usage(size_t i) {
    return COMMANDS[i].usage;
}

/* The row of COMMANDS named name, or NULL. */
static const command *find_command(const char *name) {
    for (size_t i = 0; i < command_count(); i++)
        if (strcmp(COMMANDS[i].name, name) == 0) return &COMMANDS[i];
    return NULL;
}

/* ------------------------------------------------------------ command line */

/* The defaults, before the environment and flags. */
static void config_defaults(invocation *inv) {
    memset(inv, 0, sizeof *inv);
    fvs_config *cfg = &inv->cfg;
    snprintf(cfg->host, sizeof cfg->host, "127.0.0.1");
    cfg->port = 8000;
    cfg->max_body = 12 * 1000 * 1000;
    fvs_paths_default(&inv->paths);
    cfg->assets_dir = inv->paths.assets;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->max_inflight = ncpu > 2 ? (int)(8 * ncpu) : 16;
    cfg->memory_budget = fvs_guard_default_budget();
    cfg->max_connections = 512;
    cfg->conn_timeout = 30;
    cfg->request_timeout = 30;
    cfg->max_conn_per_ip = 128;
    cfg->max_faces = FVS_MAX_FACES_DEFAULT;
    cfg->min_quality = FVS_MIN_QUALITY_DEFAULT;
    cfg->default_fmr = FV_DEFAULT_FMR;
    cfg->default_fpir = FV_DEFAULT_FPIR;
    inv->audit_limit = 100;
    inv->min_quality = -1;
}

/* Splits argv into the command, its NAME and each setting's text (val[o]:
 * the flag's value, else the environment's; flagged[o]: from a flag).
 * Returns -1 to go on, else the exit code (0 after --help). */
static int read_args(int argc, char **argv, invocation *inv, const char *val[OPT_COUNT],
                     int flagged[OPT_COUNT]) {
    for (int o = 0; o < OPT_COUNT; o++)
        if (CONFIG[o].env) val[o] = getenv(CONFIG[o].env);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--if-missing") == 0) {
            inv->if_missing = 1;
            continue;
        }
        if (strcmp(a, "--dry-run") == 0) {
            inv->dry_run = 1;
            continue;
        }
        /* import's switches */
        int *sw = strcmp(a, "--force") == 0     ? &inv->force
                  : strcmp(a, "--largest") == 0 ? &inv->largest
                  : strcmp(a, "--json") == 0    ? &inv->json
                  : strcmp(a, "--merge") == 0   ? &inv->merge
                                                : NULL;
        if (sw) {
            *sw = 1;
            continue;
        }
        if (strcmp(a, CONFIG[OPT_DEMO].flag) == 0) {
            val[OPT_DEMO] = "1";
            continue;
        }
        if (strcmp(a, "--no-metrics") == 0 || strcmp(a, "--metrics-local-only") == 0) {
            val[OPT_METRICS] = a[2] == 'n' ? "off" : "local";
            flagged[OPT_METRICS] = 1;
            continue;
        }
        int matched = 0;
        for (int o = 0; o < OPT_COUNT && !matched; o++) {
            size_t fl = strlen(CONFIG[o].flag);
            if (strncmp(a, CONFIG[o].flag, fl) != 0) continue;
            if (a[fl] == '=') {
                val[o] = a + fl + 1;
                matched = flagged[o] = 1;
            } else if (a[fl] == 0) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "faceverifyd: %s needs a value\n", a);
                    return 2;
                }
                val[o] = argv[++i];
                matched = flagged[o] = 1;
            }
        }
        if (matched) continue;
        if (a[0] == '-') {
            fprintf(stderr, "faceverifyd: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!inv->cmd)
            inv->cmd = a;
        else if (!inv->name)
            inv->name = a;
        else if (!inv->arg)
            inv->arg = a;
        else {
            fprintf(stderr, "faceverifyd: unexpected argument %s\n", a);
            return 2;
        }
    }
    if (!inv->cmd) {
        usage(stderr);
        return 2;
    }
    return -1;
}

/* Parses each setting's text into inv.  0 ok, 2 after a message. */
static int apply_config(const char *val[OPT_COUNT], const int flagged[OPT_COUNT], invocation *inv) {
    fvs_config *cfg = &inv->cfg;
    fvs_index_config *icfg = &inv->icfg;
    long long n = 0;
    if (val[OPT_LISTEN] && parse_listen(val[OPT_LISTEN], cfg)) {
        fprintf(stderr, "faceverifyd: --listen: expected HOST:PORT\n");
        return 2;
    }
    if (val[OPT_HTTP_THREADS]) {
        if (parse_size(val[OPT_HTTP_THREADS], 0, 256, &n)) goto bad;
        cfg->http_threads = (int)n;
    }
    if (val[OPT_THREADS]) {
        if (parse_size(val[OPT_THREADS], 0, 256, &n)) goto bad;
        cfg->engine_threads = (int)n;
    }
    if (val[OPT_MAX_BODY]) {
        if (parse_size(val[OPT_MAX_BODY], 1024, 1000LL * 1000 * 1000, &n)) goto bad;
        cfg->max_body = (size_t)n;
    }
    if (val[OPT_THRESHOLD]) {
        char *end = NULL;
        inv->threshold = strtod(val[OPT_THRESHOLD], &end);
        if (*end || !(inv->threshold > 0 && inv->threshold <= FVS_THRESHOLD_MAX)) goto bad;
    }
    if (val[OPT_DEFAULT_FMR] &&
        parse_real(val[OPT_DEFAULT_FMR], FV_FMR_MIN, FV_FMR_MAX, 1, &cfg->default_fmr))
        goto bad;
    if (val[OPT_DEFAULT_FPIR] &&
        parse_real(val[OPT_DEFAULT_FPIR], FV_FPIR_MIN, FV_FPIR_MAX, 1, &cfg->default_fpir))
        goto bad;
    if (val[OPT_FMR] && parse_real(val[OPT_FMR], FV_FMR_MIN, FV_FMR_MAX, 0, &inv->fmr)) goto bad;
    if (val[OPT_FPIR] && parse_real(val[OPT_FPIR], FVS_FPIR_MIN, FVS_FPIR_MAX, 0, &inv->fpir))
        goto bad;
    /* --min-quality: a new collection's gate for createcollection, the
     * default gate (below) for serve */
    if (val[OPT_MIN_QUALITY] && inv->cmd && strcmp(inv->cmd, "serve") != 0 &&
        parse_real(val[OPT_MIN_QUALITY], 0, 1, 0, &inv->min_quality))
        goto bad;
    if (val[OPT_DEMO]) {
        if (strcmp(val[OPT_DEMO], "1") && strcmp(val[OPT_DEMO], "0")) goto bad;
        cfg->demo = strcmp(val[OPT_DEMO], "1") == 0;
    }
    if (val[OPT_MAX_INFLIGHT]) {
        if (parse_size(val[OPT_MAX_INFLIGHT], 1, 100000, &n)) goto bad;
        cfg->max_inflight = (int)n;
    }
    if (val[OPT_MEMORY_BUDGET]) {
        if (parse_size(val[OPT_MEMORY_BUDGET], 16LL * 1000 * 1000, 1LL << 50, &n)) goto bad;
        cfg->memory_budget = (uint64_t)n;
    }
    if (val[OPT_MAX_CONNECTIONS]) {
        if (parse_size(val[OPT_MAX_CONNECTIONS], 1, 100000, &n)) goto bad;
        cfg->max_connections = (int)n;
    }
    if (val[OPT_MAX_FACES]) {
        if (parse_size(val[OPT_MAX_FACES], 1, FVS_MAX_FACES_LIMIT, &n)) goto bad;
        cfg->max_faces = (int)n;
    }
    if (val[OPT_CONN_TIMEOUT]) {
        if (parse_size(val[OPT_CONN_TIMEOUT], 1, 3600, &n)) goto bad;
        cfg->conn_timeout = (int)n;
    }
    if (val[OPT_REQUEST_TIMEOUT]) {
        if (parse_size(val[OPT_REQUEST_TIMEOUT], 1, 3600, &n)) goto bad;
        cfg->request_timeout = (int)n;
    }
    if (val[OPT_MAX_CONN_PER_IP]) {
        if (parse_size(val[OPT_MAX_CONN_PER_IP], 1, 100000, &n)) goto bad;
        cfg->max_conn_per_ip = (int)n;
    }
    if (val[OPT_RATE_LIMIT] && parse_rate(val[OPT_RATE_LIMIT], &cfg->rate_limit)) goto bad;
    if (val[OPT_RATE_BURST]) {
        if (parse_size(val[OPT_RATE_BURST], 1, 1000000, &n)) goto bad;
        cfg->rate_burst = (double)n;
    }
    if (val[OPT_MIN_QUALITY]) {
        char *end = NULL;
        double q = strtod(val[OPT_MIN_QUALITY], &end);
        if (end == val[OPT_MIN_QUALITY] || *end || !(q >= 0 && q <= 1)) {
            fprintf(stderr, "faceverifyd: --min-quality: expected a quality score in [0, 1]\n");
            return 2;
        }
        cfg->min_quality = q;
    }
    if (val[OPT_METRICS]) {
        static const char *const modes[] = {
            [FVS_METRICS_ON] = "on", [FVS_METRICS_LOCAL] = "local", [FVS_METRICS_OFF] = "off"};
        int found = -1;
        for (int i = 0; i < 3; i++)
            if (strcmp(val[OPT_METRICS], modes[i]) == 0) found = i;
        if (found < 0) {
            fprintf(stderr, "faceverifyd: --metrics: expected on, local or off\n");
            return 2;
        }
        cfg->metrics = (fvs_metrics_mode)found;
    }
    if (val[OPT_LOG_FORMAT]) {
        if (strcmp(val[OPT_LOG_FORMAT], "text") && strcmp(val[OPT_LOG_FORMAT], "json")) {
            fprintf(stderr, "faceverifyd: --log-format: expected text or json\n");
            return 2;
        }
        cfg->log_format = strcmp(val[OPT_LOG_FORMAT], "json") == 0 ? FVS_LOG_JSON : FVS_LOG_TEXT;
    }
    if (val[OPT_USER] && *val[OPT_USER]) cfg->run_as = val[OPT_USER];
    if (val[OPT_LIMIT] && parse_size(val[OPT_LIMIT], 1, 1000000, &inv->audit_limit)) goto bad;
    if (val[OPT_MODELS]) cfg->models_dir = val[OPT_MODELS];
    if (val[OPT_MODELS_DIR] && *val[OPT_MODELS_DIR]) cfg->trained_dir = val[OPT_MODELS_DIR];
    if (val[OPT_ASSETS]) cfg->assets_dir = val[OPT_ASSETS];
    cfg->database_url = val[OPT_DB] ? val[OPT_DB] : inv->paths.db_url;
    inv->model = val[OPT_MODEL];
    inv->out = val[OPT_OUT];
    inv->from = val[OPT_FROM];
    icfg->backend = FVSEARCH_EXACT;
    icfg->db_url = cfg->database_url;
    icfg->reconcile_s = 30;
    icfg->changes_keep = 100000;
    if (val[OPT_INDEX_BACKEND] && fvsearch_kind_parse(val[OPT_INDEX_BACKEND], &icfg->backend)) {
        fprintf(stderr, "faceverifyd: --index-backend: expected exact, exact-int8, faiss-flat, "
                        "faiss-hnsw or faiss-ivfpq\n");
        return 2;
    }
    inv->backend_flagged = flagged[OPT_INDEX_BACKEND];
    inv->quality_flagged = flagged[OPT_MIN_QUALITY];
    if (val[OPT_INDEX_DIR] && *val[OPT_INDEX_DIR]) icfg->dir = val[OPT_INDEX_DIR];
    if (val[OPT_INDEX_SYNC]) {
        if (strcmp(val[OPT_INDEX_SYNC], "request") && strcmp(val[OPT_INDEX_SYNC], "notify")) {
            fprintf(stderr, "faceverifyd: --index-sync: expected request or notify\n");
            return 2;
        }
        icfg->sync_notify = strcmp(val[OPT_INDEX_SYNC], "notify") == 0;
    }
    if (val[OPT_INDEX_RECONCILE]) {
        if (parse_size(val[OPT_INDEX_RECONCILE], 0, 86400, &n)) goto bad;
        icfg->reconcile_s = (int)n;
    }
    if (val[OPT_INDEX_CHANGES_KEEP] &&
        parse_size(val[OPT_INDEX_CHANGES_KEEP], 0, 1000000000, &icfg->changes_keep))
        goto bad;
    return 0;
bad:
    fprintf(stderr, "faceverifyd: bad option value\n");
    return 2;
}

/* Runs c on the database: reads the template key (from the environment
 * only: a flag would show in ps and shell history), checks it against the
 * settings, opens the store, runs c and closes it. */
static int with_store(const command *c, const invocation *inv) {
    unsigned char tkey[FVS_TKEY_BYTES];
    const char *tkey_b64 = getenv("FACEVERIFY_TEMPLATE_KEY");
    int has_tkey = tkey_b64 && *tkey_b64;
    char err[512];
    if (has_tkey && fvs_tkey_parse(tkey_b64, tkey, err, sizeof err)) {
        fprintf(stderr, "faceverifyd: %s\n", err);
        return 2;
    }
    if (has_tkey && inv->icfg.dir) {
        /* Index files hold the vectors themselves: they would undo the
         * encryption at rest. */
        fprintf(stderr, "faceverifyd: --index-dir keeps templates unencrypted on disk: not "
                        "allowed with FACEVERIFY_TEMPLATE_KEY (indexes stay in memory)\n");
        return 2;
    }
    if (!has_tkey && c->run == cmd_rekey) {
        fprintf(stderr, "faceverifyd: rekeytemplates: set FACEVERIFY_TEMPLATE_KEY (the new "
                        "key) and FACEVERIFY_TEMPLATE_KEY_OLD\n");
        return 2;
    }
    if (!has_tkey && c->run == cmd_encrypt) {
        fprintf(stderr, "faceverifyd: encrypttemplates: set FACEVERIFY_TEMPLATE_KEY "
                        "(faceverifyd genkey makes one)\n");
        return 2;
    }
    if (c->run == cmd_migrate) make_sqlite_dir(inv->cfg.database_url);
    fvs_store *st = fvs_store_open(inv->cfg.database_url, err, sizeof err);
    if (!st) {
        fprintf(stderr, "faceverifyd: %s\n", err);
        sodium_memzero(tkey, sizeof tkey);
        return 1;
    }
    fvs_store_set_template_key(st, has_tkey ? tkey : NULL);
    sodium_memzero(tkey, sizeof tkey);
    int rc = c->run(inv, st);
    fvs_store_close(st);
    return rc;
}

int main(int argc, char **argv) {
    invocation inv;
    config_defaults(&inv);
    const char *val[OPT_COUNT] = {0};
    int flagged[OPT_COUNT] = {0}; /* given on the command line, not by the environment */
    int rc = read_args(argc, argv, &inv, val, flagged);
    if (rc >= 0) return rc;
    if (apply_config(val, flagged, &inv)) return 2;
    if (fvs_auth_init()) {
        fprintf(stderr, "faceverifyd: libsodium failed to initialise\n");
        return 1;
    }
    const command *c = find_command(inv.cmd);
    if (!c) {
        fprintf(stderr, "faceverifyd: unknown command %s\n", inv.cmd);
        usage(stderr);
        return 2;
    }
    return c->needs_store ? with_store(c, &inv) : c->run(&inv, NULL);
}
