/*
 * demo.c: the demo page and its keyless access.
 *
 * The page (static/index.html, app.js, app.css under the assets folder) is
 * a client of the public JSON API like any other.  In demo mode (--demo,
 * FACEVERIFY_DEMO=1; off by default, on in `make run`) it works without an
 * API key, bound to one collection, "demo", under these rules:
 *
 *  - At start-up the demo collection gets a fresh random API key that is
 *    never shown, and the process draws a random 256-bit demo token.
 *  - GET / serves index.html with the token in a <meta> tag.  Only a page
 *    of the same origin can read it (the same-origin policy), and the
 *    response says no-store.
 *  - A request that sends the token in the X-Demo-Token header instead of
 *    X-API-Key is served on the demo collection, never on another one.  A
 *    custom header makes any cross-origin fetch send a CORS preflight,
 *    which this server never grants (no Access-Control-* headers), and a
 *    plain cross-site form post cannot set it.
 *  - Defence in depth: the request's Origin (when sent) must be this
 *    server's own, Sec-Fetch-Site (when sent) must be same-origin, and the
 *    Host must be a local name of the server (127.0.0.1, localhost, [::1]
 *    or the --listen host) with its port, which defeats DNS rebinding (a
 *    hostile name pointed at 127.0.0.1 would otherwise be "same-origin").
 *    The page is also served with a strict Content-Security-Policy and
 *    frame-ancestors 'none' (no clickjacking).
 *
 * Static files: "/static/NAME" with NAME of letters, digits, '-', '_' and
 * one '.' before a known extension (no '/', so no traversal), text only;
 * served with their Content-Type, nosniff, an ETag (BLAKE2b of the bytes)
 * and Cache-Control: no-cache, so a browser revalidates with
 * If-None-Match and gets 304 while the file is unchanged.
 */
#include "demo.h"

#include <ctype.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"

#define DEMO_COLLECTION "demo"
#define TOKEN_PLACEHOLDER "__FV_DEMO_TOKEN__"
#define MAX_ASSET_BYTES ((size_t)2 * 1024 * 1024)

static const char PAGE_CSP[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

int fvs_demo_init(fvs_server *srv, char *err, size_t errlen) {
    char key[FVS_KEY_MAX], prefix[FVS_KEY_PREFIX_LEN + 1];
    unsigned char hash[FVS_KEY_HASH_BYTES];
    if (fvs_key_generate(key, prefix, hash)) {
        snprintf(err, errlen, "cannot generate a key");
        return -1;
    }
    int64_t id = 0;
    fvs_collection c = {0};
    snprintf(c.name, sizeof c.name, "%s", DEMO_COLLECTION);
    int rc = fvs_collection_create(srv->store, &c, prefix, hash, &id, err, errlen);
    if (rc > 0) /* exists: replace its key, so that only this process reaches it */
        rc = fvs_collection_set_key(srv->store, DEMO_COLLECTION, prefix, hash, err, errlen);
    if (rc == 0) rc = fvs_collection_by_key(srv->store, prefix, hash, &srv->demo_coll, err, errlen);
    sodium_memzero(key, sizeof key);
    if (rc) {
        if (rc > 0) snprintf(err, errlen, "the demo collection vanished during start-up");
        return -1;
    }
    unsigned char tok[32];
    randombytes_buf(tok, sizeof tok);
    sodium_bin2hex(srv->demo_token, sizeof srv->demo_token, tok, sizeof tok);
    return 0;
}

/* ------------------------------------------------------------ files */

/* Reads <assets>/<rel> whole (at most MAX_ASSET_BYTES) into a NUL-ended
 * buffer the caller frees; NULL when missing or unreadable. */
static char *read_asset(const fvs_server *srv, const char *rel, size_t *len) {
    char path[1024];
    if (snprintf(path, sizeof path, "%s/%s", srv->cfg.assets_dir, rel) >= (int)sizeof path)
        return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(MAX_ASSET_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_ASSET_BYTES + 1, f) : 0;
    int bad = ferror(f) || n > MAX_ASSET_BYTES;
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

static const char *content_type(const char *name) {
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".json", "application/json"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i].ext) == 0) return types[i].type;
    return NULL;
}

/* A file name under static/: [A-Za-z0-9_-]+ '.' ext, nothing else. */
static int safe_name(const char *name) {
    size_t n = strlen(name), dots = 0;
    if (n == 0 || n > 64 || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '.')
            dots++;
        else if (!isalnum(c) && c != '-' && c != '_')
            return 0;
    }
    return dots == 1 && content_type(name) != NULL;
}

/* A raw (non-JSON) response: http.c sends "__raw__" verbatim with
 * "__ctype__" and the "__headers__" object as headers. */
static void raw_reply(fvs_resp *out, int status, const char *body, size_t len, const char *ctype,
                      json_t *headers) {
    json_object_set_new(headers, "X-Content-Type-Options", json_string("nosniff"));
    fvs_reply(out, status,
              json_pack("{s:s#, s:s, s:o}", "__raw__", body, len, "__ctype__", ctype, "__headers__",
                        headers));
}

static void serve_static(fvs_req *r, fvs_resp *out, const char *name) {
    char rel[96];
    size_t len = 0;
    char *buf = NULL;
    if (safe_name(name)) {
        snprintf(rel, sizeof rel, "static/%s", name);
        buf = read_asset(r->srv, rel, &len);
    }
    if (!buf) {
        fvs_error(out, 404, "not_found", "no static file %.64s", name);
        return;
    }
    unsigned char h[16];
    char hex[33], etag[40];
    crypto_generichash(h, sizeof h, (const unsigned char *)buf, len, NULL, 0);
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    snprintf(etag, sizeof etag, "\"%s\"", hex);
    json_t *hdr = json_pack("{s:s, s:s}", "Cache-Control", "no-cache", "ETag", etag);
    const char *inm = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "If-None-Match");
    if (inm && strcmp(inm, etag) == 0)
        raw_reply(out, 304, "", 0, content_type(name), hdr);
    else
        raw_reply(out, 200, buf, len, content_type(name), hdr);
    free(buf);
}

/* index.html with every placeholder replaced by the token. */
static void serve_page(fvs_req *r, fvs_resp *out) {
    size_t len = 0;
    char *page = read_asset(r->srv, "static/index.html", &len);
    if (!page) {
        fvs_error(out, 404, "not_found", "the demo page (static/index.html) is not installed");
        return;
    }
    size_t plen = strlen(TOKEN_PLACEHOLDER), tlen = strlen(r->srv->demo_token);
    size_t count = 0;
    for (const char *p = page; (p = strstr(p, TOKEN_PLACEHOLDER)); p += plen) count++;
    char *html = malloc(len + count * tlen + 1); /* enough: each placeholder shrinks len */
    if (!html) {
        free(page);
        fvs_error(out, 503, "unavailable", "out of memory");
        return;
    }
    size_t o = 0;
    const char *p = page;
    for (const char *q; (q = strstr(p, TOKEN_PLACEHOLDER)); p = q + plen) {
        memcpy(html + o, p, (size_t)(q - p));
        o += (size_t)(q - p);
        memcpy(html + o, r->srv->demo_token, tlen);
        o += tlen;
    }
    size_t rest = strlen(p);
    memcpy(html + o, p, rest);
    o += rest;
    json_t *hdr =
        json_pack("{s:s, s:s, s:s, s:s, s:s}", "Cache-Control", "no-store",
                  "Content-Security-Policy", PAGE_CSP, "X-Frame-Options", "DENY", "Referrer-Policy",
                  "no-referrer", "Permissions-Policy", "camera=(self), microphone=()");
    raw_reply(out, 200, html, o, "text/html; charset=utf-8", hdr);
    free(html);
    free(page);
}

/* ------------------------------------------------------------ access */

/* The Host header names this server: a loopback name or the --listen
 * host, with the port it listens on (or none for port 80). */
static int host_allowed(const fvs_req *r, const char *host) {
    if (!host) return 0;
    const fvs_config *cfg = &r->srv->cfg;
    char port[16];
    snprintf(port, sizeof port, ":%d", cfg->port);
    const char *names[] = {"127.0.0.1", "localhost", "[::1]", cfg->host};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        size_t n = strlen(names[i]);
        if (strncmp(host, names[i], n) != 0) continue;
        if (strcmp(host + n, port) == 0 || (host[n] == 0 && cfg->port == 80)) return 1;
    }
    return 0;
}

int fvs_demo_request(fvs_req *r) {
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Demo-Token") != NULL &&
           MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-API-Key") == NULL;
}

int fvs_demo_authenticate(fvs_req *r, fvs_resp *out) {
    const fvs_server *srv = r->srv;
    const char *tok = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "X-Demo-Token");
    if (!srv->cfg.demo) {
        fvs_error(out, 401, "unauthorized", "demo mode is off: send an X-API-Key");
        return -1;
    }
    size_t want = strlen(srv->demo_token);
    if (!tok || strlen(tok) != want || sodium_memcmp(tok, srv->demo_token, want) != 0) {
        fvs_error(out, 401, "unauthorized", "invalid demo token (reload the page)");
        return -1;
    }
    const char *host = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Host");
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    const char *site = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Sec-Fetch-Site");
    char self[160];
    snprintf(self, sizeof self, "http://%s", host ? host : "");
    if (!host_allowed(r, host) || (origin && strcmp(origin, self) != 0) ||
        (site && strcmp(site, "same-origin") != 0)) {
        fvs_error(out, 403, "forbidden", "cross-site request refused by the demo");
        return -1;
    }
    r->coll = srv->demo_coll;
    return 0;
}

int fvs_demo_route(fvs_req *r, fvs_resp *out) {
    const char *u = r->url;
    const char *pre = "/static/";
    int root = strcmp(u, "/") == 0 || strcmp(u, "/index.html") == 0;
    int stat = strncmp(u, pre, strlen(pre)) == 0;
    if (!root && !stat) return 0;
    if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0) {
        fvs_error(out, 405, "method_not_allowed", "%s is not allowed on %s", r->method, u);
        return 1;
    }
    if (stat) {
        serve_static(r, out, u + strlen(pre));
    } else if (!r->srv->cfg.demo) {
        size_t len = 0;
        char *page = read_asset(r->srv, "static/demo-off.html", &len);
        static const char fallback[] = "The demo is switched off (start faceverifyd with --demo).";
        raw_reply(out, 404, page ? page : fallback, page ? len : strlen(fallback),
                  page ? "text/html; charset=utf-8" : "text/plain; charset=utf-8",
                  json_pack("{s:s}", "Cache-Control", "no-cache"));
        free(page);
    } else if (!host_allowed(r, MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Host"))) {
        /* DNS rebinding: never hand the token to a page under a foreign name. */
        fvs_error(out, 403, "forbidden", "open the demo at http://127.0.0.1:%d/", r->srv->cfg.port);
    } else {
        serve_page(r, out);
    }
    return 1;
}
