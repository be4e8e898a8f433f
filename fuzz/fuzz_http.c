/*
 * fuzz_http.c: the in-process server of fuzz_http.h.
 *
 * The daemon has no listening socket and no threads
 * (fvs_http_start_unlistened); each request gets a fresh socketpair whose
 * far end is given to MHD_add_connection.  The loop writes the request
 * (non-blocking, so requests larger than the socket buffer work), then
 * half-closes, runs MHD_run and reads the answer until the server closes
 * its end: an incomplete request ends in EOF on the server side, which
 * makes libmicrohttpd drop it.  Each request goes through the gate's
 * validator first (gate.c), as in faceverifyd.
 */
#include "fuzz_http.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/gate.h"
#include "server/guard.h"
#include "server/http_mhd.h"

static fvs_server srv;
static struct MHD_Daemon *daemon_;
static char key[FVS_KEY_MAX];
static char db_path[64];

static void cleanup(void) {
    if (daemon_) MHD_stop_daemon(daemon_);
    fvs_guard_destroy(srv.guard);
    fvs_index_destroy(srv.index);
    fvs_store_close(srv.store);
    if (db_path[0]) unlink(db_path);
}

static void setup(void) {
    char err[512];
    if (fvs_auth_init()) abort();
    snprintf(db_path, sizeof db_path, "/tmp/fvfuzz-XXXXXX");
    int fd = mkstemp(db_path);
    if (fd < 0) abort();
    close(fd);
    static char url[128]; /* the index keeps a pointer to it */
    snprintf(url, sizeof url, "sqlite://%s", db_path);
    srv.store = fvs_store_open(url, err, sizeof err);
    int applied = 0;
    if (!srv.store || fvs_store_migrate(srv.store, &applied, err, sizeof err)) {
        fprintf(stderr, "fuzz_http: database: %s\n", err);
        abort();
    }
    char prefix[FVS_KEY_PREFIX_LEN + 1];
    unsigned char hash[FVS_KEY_HASH_BYTES];
    int64_t id = 0;
    fvs_key_generate(key, prefix, hash);
    fvs_collection coll = {0};
    snprintf(coll.name, sizeof coll.name, "fuzz");
    if (fvs_collection_create(srv.store, &coll, prefix, hash, &id, err, sizeof err)) abort();
    srv.cfg.max_body = 256 * 1024;
    srv.cfg.assets_dir = FVS_ASSETS_DIR;
    srv.cfg.max_inflight = 4;
    srv.guard = fvs_guard_create(srv.cfg.max_inflight, 0, 0);
    const fvs_index_config icfg = {.backend = FVSEARCH_EXACT, .db_url = url};
    srv.index = fvs_index_create(srv.store, &icfg);
    snprintf(srv.engine_error, sizeof srv.engine_error, "not loaded while fuzzing");
    srv.default_threshold = 0.6f;
    daemon_ = fvs_http_start_unlistened(&srv);
    if (!daemon_ || !srv.index || !srv.guard) abort();
    atexit(cleanup);
}

const char *fz_http_key(void) {
    if (!daemon_) setup();
    return key;
}

int fz_http_request(const uint8_t *req, size_t len) {
    if (!daemon_) setup();
    /* As in faceverifyd, libmicrohttpd sees only what the gate passes: a
     * refusal is the gate's own answer, which must be whole and in the
     * error shape; an unfinished header block never reaches MHD (the gate
     * times it out). */
    fvs_gate_verdict v;
    fvs_gate_check(req, len, &v);
    if (v.state == FVS_GATE_MORE) return 0;
    if (v.state == FVS_GATE_REFUSE) {
        char ans[2048];
        if (v.status < 400 || v.status >= 600 || !v.code || !v.message ||
            !fvs_gate_answer(v.status, v.code, v.message, "00000000000000000000000000000000", ans,
                             sizeof ans))
            abort();
        return v.status;
    }
    if (v.head_len > len) abort();
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) abort();
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (MHD_add_connection(daemon_, sv[1], (struct sockaddr *)&addr, sizeof addr) != MHD_YES)
        abort();
    size_t sent = 0;
    char resp[64];
    size_t got = 0;
    int status = 0;
    for (long spins = 0;; spins++) {
        if (spins > 1000000) {
            fprintf(stderr, "fuzz_http: the server never closed the connection\n");
            abort();
        }
        if (sent < len) {
            ssize_t n = write(sv[0], req + sent, len - sent);
            if (n > 0) sent += (size_t)n;
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) sent = len; /* closed */
            if (sent == len) shutdown(sv[0], SHUT_WR);
        } else if (len == 0 && spins == 0) {
            shutdown(sv[0], SHUT_WR);
        }
        MHD_run(daemon_);
        char buf[4096];
        ssize_t n;
        int eof = 0;
        while ((n = read(sv[0], buf, sizeof buf)) != 0) {
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                eof = 1; /* reset */
                break;
            }
            for (ssize_t i = 0; i < n && got < sizeof resp - 1; i++) resp[got++] = buf[i];
        }
        if (n == 0) eof = 1;
        if (eof) break;
    }
    close(sv[0]);
    MHD_run(daemon_); /* let it free the connection */
    resp[got] = 0;
    if (got >= 12 && strncmp(resp, "HTTP/1.", 7) == 0) status = atoi(resp + 9);
    if (getenv("FZ_VERBOSE")) fprintf(stderr, "fuzz_http: %s\n", resp);
    if (status >= 500 && status != 503) {
        fprintf(stderr, "fuzz_http: answered %d\n", status);
        abort();
    }
    return status;
}

int fz_http_post(const char *method, const char *path, const char *content_type,
                 const uint8_t *body, size_t len) {
    char head[1024];
    int h = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: fuzz\r\nX-API-Key: %s\r\nConnection: close\r\n"
                     "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                     method, path, fz_http_key(), content_type, len);
    if (h < 0 || (size_t)h >= sizeof head) abort();
    uint8_t *req = malloc((size_t)h + len + 1);
    if (!req) abort();
    memcpy(req, head, (size_t)h);
    if (len) memcpy(req + h, body, len);
    int st = fz_http_request(req, (size_t)h + len);
    free(req);
    return st;
}
