/*
 * main.c: faceverifyd's commands and configuration.
 *
 *   faceverifyd migrate                    apply the numbered schema migrations
 *   faceverifyd serve [--listen H:P]       serve the JSON API
 *   faceverifyd createcollection NAME      new tenant; prints its API key last
 *   faceverifyd rotatekey NAME             replace a collection's API key
 *   faceverifyd rebuildindex [NAME]        rebuild search indexes from storage
 *
 * Configuration is one table (CONFIG below): each setting has a flag and an
 * environment variable, flags winning.  All commands read the database URL
 * from FACEVERIFY_DATABASE_URL (default: sqlite under the repo's var/).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "auth.h"
#include "server.h"

#ifndef FVS_DEFAULT_DB
#define FVS_DEFAULT_DB "var/faceverify.db"
#endif
#ifndef FVS_ASSETS_DIR
#define FVS_ASSETS_DIR "src/server"
#endif

static void usage(FILE *f) {
    fprintf(f,
            "usage: faceverifyd COMMAND [options]\n"
            "commands:\n"
            "  migrate                  create or upgrade the database schema\n"
            "  serve                    serve the HTTP/JSON API\n"
            "  createcollection NAME    create a collection; its API key is the last line\n"
            "                           (--threshold T overrides the decision threshold;\n"
            "                           --if-missing: do nothing if NAME exists)\n"
            "  rotatekey NAME           replace a collection's API key (prints the new one)\n"
            "  rebuildindex [NAME]      rebuild the search index of one collection (or all)\n"
            "                           from storage and save it in the index dir\n"
            "options (environment variable in brackets):\n"
            "  --database URL      sqlite:///path or postgres://... [FACEVERIFY_DATABASE_URL]\n"
            "                      default sqlite://%s\n"
            "  --listen HOST:PORT  default 127.0.0.1:8000 [FACEVERIFY_LISTEN]\n"
            "  --http-threads N    HTTP thread pool size, 0: 2 x CPUs [FACEVERIFY_HTTP_THREADS]\n"
            "  --threads N         neural network threads, 0: CPUs [FACEVERIFY_THREADS]\n"
            "  --max-body BYTES    largest request body, default 12000000 [FACEVERIFY_MAX_BODY]\n"
            "  --models DIR        model files [FACEVERIFY_MODELS]\n"
            "  --assets DIR        openapi.json and docs.html [FACEVERIFY_ASSETS]\n"
            "  --index-backend B   exact (default), exact-int8, faiss-flat, faiss-hnsw,\n"
            "                      faiss-ivfpq [FACEVERIFY_INDEX_BACKEND]\n"
            "  --index-dir DIR     persist search indexes here; default: memory only\n"
            "                      [FACEVERIFY_INDEX_DIR]\n"
            "  --index-sync MODE   request (check storage before each search, default) or\n"
            "                      notify (PostgreSQL LISTEN/NOTIFY) [FACEVERIFY_INDEX_SYNC]\n"
            "  --index-reconcile S seconds between change-log reconciles, default 30\n"
            "                      [FACEVERIFY_INDEX_RECONCILE]\n",
            FVS_DEFAULT_DB);
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
    OPT_INDEX_BACKEND,
    OPT_INDEX_DIR,
    OPT_INDEX_SYNC,
    OPT_INDEX_RECONCILE,
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
    [OPT_INDEX_BACKEND] = {"--index-backend", "FACEVERIFY_INDEX_BACKEND"},
    [OPT_INDEX_DIR] = {"--index-dir", "FACEVERIFY_INDEX_DIR"},
    [OPT_INDEX_SYNC] = {"--index-sync", "FACEVERIFY_INDEX_SYNC"},
    [OPT_INDEX_RECONCILE] = {"--index-reconcile", "FACEVERIFY_INDEX_RECONCILE"},
};

/* Makes the folder of a default SQLite file (var/) so that a first run
 * works without setup. */
static void make_sqlite_dir(const char *url) {
    if (strncmp(url, "sqlite://", 9) != 0) return;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", url + 9);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return;
    *slash = 0;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        fprintf(stderr, "faceverifyd: cannot create %s: %s\n", dir, strerror(errno));
}

static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > FVS_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
    return 1;
}

static int cmd_migrate(fvs_store *st) {
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

static int cmd_collection(fvs_store *st, const char *name, int rotate, double threshold,
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
    else
        rc = fvs_collection_create(st, name, prefix, hash, threshold, &id, err, sizeof err);
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

typedef struct find_ctx {
    const char *name;
    int64_t id;
} find_ctx;

static int find_collection(void *ctx, int64_t id, const char *name) {
    find_ctx *f = ctx;
    if (strcmp(name, f->name) == 0) f->id = id;
    return 0;
}

static int cmd_rebuildindex(fvs_store *st, const fvs_index_config *icfg, const char *name) {
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
    int rc = ix ? fvs_index_rebuild(ix, f.id, &built, err, sizeof err) : -1;
    if (rc) fprintf(stderr, "faceverifyd: rebuildindex: %s\n", ix ? err : "out of memory");
    fvs_index_destroy(ix);
    if (rc) return 1;
    printf("faceverifyd: rebuilt %d %s index%s%s%s\n", built, fvi_search_kind_name(icfg->backend),
           built == 1 ? "" : "es", icfg->dir ? " in " : " (no --index-dir: not saved)",
           icfg->dir ? icfg->dir : "");
    return 0;
}

static int cmd_serve(fvs_store *st, fvs_config *cfg, const fvs_index_config *icfg) {
    if (need_schema(st)) return 1;
    fvs_server srv;
    memset(&srv, 0, sizeof srv);
    srv.cfg = *cfg;
    srv.store = st;
    srv.index = fvs_index_create(st, icfg);
    char ierr[512];
    if (!srv.index || fvs_index_start(srv.index, ierr, sizeof ierr)) {
        fprintf(stderr, "faceverifyd: search index: %s\n", srv.index ? ierr : "out of memory");
        fvs_index_destroy(srv.index);
        return 1;
    }
    fv_config ec;
    fv_config_init(&ec);
    ec.models_dir = cfg->models_dir;
    ec.threads = cfg->engine_threads;
    fv_status s = fv_engine_create(&ec, &srv.engine, srv.engine_error, sizeof srv.engine_error);
    if (s != FV_OK) {
        srv.engine = NULL;
        fprintf(stderr,
                "faceverifyd: warning: models not loaded (%s): image endpoints answer 503\n",
                srv.engine_error);
    }
    srv.default_threshold = srv.engine ? fv_engine_threshold(srv.engine) : 0.6f;
    int rc = fvs_http_serve(&srv);
    fv_engine_destroy(srv.engine);
    fvs_index_destroy(srv.index);
    return rc;
}

int main(int argc, char **argv) {
    fvs_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.host, sizeof cfg.host, "127.0.0.1");
    cfg.port = 8000;
    cfg.max_body = 12 * 1000 * 1000;
    cfg.assets_dir = FVS_ASSETS_DIR;
    const char *val[OPT_COUNT] = {0};
    for (int o = 0; o < OPT_COUNT; o++)
        if (CONFIG[o].env) val[o] = getenv(CONFIG[o].env);
    const char *cmd = NULL, *name = NULL;
    int if_missing = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--if-missing") == 0) {
            if_missing = 1;
            continue;
        }
        int matched = 0;
        for (int o = 0; o < OPT_COUNT && !matched; o++) {
            size_t fl = strlen(CONFIG[o].flag);
            if (strncmp(a, CONFIG[o].flag, fl) != 0) continue;
            if (a[fl] == '=') {
                val[o] = a + fl + 1;
                matched = 1;
            } else if (a[fl] == 0) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "faceverifyd: %s needs a value\n", a);
                    return 2;
                }
                val[o] = argv[++i];
                matched = 1;
            }
        }
        if (matched) continue;
        if (a[0] == '-') {
            fprintf(stderr, "faceverifyd: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!cmd)
            cmd = a;
        else if (!name)
            name = a;
        else {
            fprintf(stderr, "faceverifyd: unexpected argument %s\n", a);
            return 2;
        }
    }
    if (!cmd) {
        usage(stderr);
        return 2;
    }
    long long n = 0;
    double threshold = 0;
    if (val[OPT_LISTEN] && parse_listen(val[OPT_LISTEN], &cfg)) {
        fprintf(stderr, "faceverifyd: --listen: expected HOST:PORT\n");
        return 2;
    }
    if (val[OPT_HTTP_THREADS]) {
        if (parse_size(val[OPT_HTTP_THREADS], 0, 256, &n)) goto bad;
        cfg.http_threads = (int)n;
    }
    if (val[OPT_THREADS]) {
        if (parse_size(val[OPT_THREADS], 0, 256, &n)) goto bad;
        cfg.engine_threads = (int)n;
    }
    if (val[OPT_MAX_BODY]) {
        if (parse_size(val[OPT_MAX_BODY], 1024, 1000LL * 1000 * 1000, &n)) goto bad;
        cfg.max_body = (size_t)n;
    }
    if (val[OPT_THRESHOLD]) {
        char *end = NULL;
        threshold = strtod(val[OPT_THRESHOLD], &end);
        if (*end || !(threshold > 0 && threshold < 4)) goto bad;
    }
    if (val[OPT_MODELS]) cfg.models_dir = val[OPT_MODELS];
    if (val[OPT_ASSETS]) cfg.assets_dir = val[OPT_ASSETS];
    cfg.database_url = val[OPT_DB] ? val[OPT_DB] : "sqlite://" FVS_DEFAULT_DB;
    fvs_index_config icfg = {FVI_SEARCH_EXACT, NULL, cfg.database_url, 0, 30};
    if (val[OPT_INDEX_BACKEND] && fvi_search_kind_parse(val[OPT_INDEX_BACKEND], &icfg.backend)) {
        fprintf(stderr, "faceverifyd: --index-backend: expected exact, exact-int8, faiss-flat, "
                        "faiss-hnsw or faiss-ivfpq\n");
        return 2;
    }
    if (val[OPT_INDEX_DIR] && *val[OPT_INDEX_DIR]) icfg.dir = val[OPT_INDEX_DIR];
    if (val[OPT_INDEX_SYNC]) {
        if (strcmp(val[OPT_INDEX_SYNC], "request") && strcmp(val[OPT_INDEX_SYNC], "notify")) {
            fprintf(stderr, "faceverifyd: --index-sync: expected request or notify\n");
            return 2;
        }
        icfg.sync_notify = strcmp(val[OPT_INDEX_SYNC], "notify") == 0;
    }
    if (val[OPT_INDEX_RECONCILE]) {
        if (parse_size(val[OPT_INDEX_RECONCILE], 0, 86400, &n)) goto bad;
        icfg.reconcile_s = (int)n;
    }

    if (fvs_auth_init()) {
        fprintf(stderr, "faceverifyd: libsodium failed to initialise\n");
        return 1;
    }
    if (strcmp(cmd, "migrate") && strcmp(cmd, "serve") && strcmp(cmd, "createcollection") &&
        strcmp(cmd, "rotatekey") && strcmp(cmd, "rebuildindex")) {
        fprintf(stderr, "faceverifyd: unknown command %s\n", cmd);
        usage(stderr);
        return 2;
    }
    if (strcmp(cmd, "migrate") == 0) make_sqlite_dir(cfg.database_url);
    char err[512];
    fvs_store *st = fvs_store_open(cfg.database_url, err, sizeof err);
    if (!st) {
        fprintf(stderr, "faceverifyd: %s\n", err);
        return 1;
    }
    int rc;
    if (strcmp(cmd, "migrate") == 0)
        rc = cmd_migrate(st);
    else if (strcmp(cmd, "serve") == 0)
        rc = cmd_serve(st, &cfg, &icfg);
    else if (strcmp(cmd, "rebuildindex") == 0)
        rc = cmd_rebuildindex(st, &icfg, name);
    else
        rc = cmd_collection(st, name, strcmp(cmd, "rotatekey") == 0, threshold, if_missing);
    fvs_store_close(st);
    return rc;
bad:
    fprintf(stderr, "faceverifyd: bad option value\n");
    return 2;
}
