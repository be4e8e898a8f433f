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
 * The page's static files (/static/NAME) are served by assets.c, with an
 * ETag so that a browser revalidates and gets 304 while a file is
 * unchanged.
 */
#include "server/demo.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/assets.h"
#include "server/auth.h"

#define DEMO_COLLECTION "demo"
#define TOKEN_PLACEHOLDER "__FV_DEMO_TOKEN__"

static const char PAGE_CSP[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'";

/* The demo collection's stored key prefix starts with this marker, which
 * no API key's prefix can ("fvk_" + base64url, auth.c): it tells a
 * collection demo mode made from one a key holder made and named "demo",
 * which demo mode must not take over (its key would stop working and the
 * keyless page would show its subjects). */
#define DEMO_PREFIX_MARK "demo:"

int fvs_demo_init(fvs_server *srv, char *err, size_t errlen) {
    char key[FVS_KEY_MAX], prefix[FVS_KEY_PREFIX_LEN + 1], have[64] = "";
    unsigned char hash[FVS_KEY_HASH_BYTES];
    if (fvs_key_generate(key, prefix, hash)) {
        snprintf(err, errlen, "cannot generate a key");
        return -1;
    }
    _Static_assert(sizeof DEMO_PREFIX_MARK - 1 < FVS_KEY_PREFIX_LEN, "room for the mark");
    memcpy(prefix, DEMO_PREFIX_MARK, sizeof DEMO_PREFIX_MARK - 1);
    int64_t id = 0;
    fvs_collection c = {0};
    c.min_quality = -1;
    snprintf(c.name, sizeof c.name, "%s", DEMO_COLLECTION);
    int rc = fvs_collection_create(srv->store, &c, prefix, hash, &id, err, errlen);
    if (rc > 0)
        rc = fvs_collection_key_prefix(srv->store, DEMO_COLLECTION, have, sizeof have, err, errlen);
    if (rc == 0 && have[0] && strncmp(have, DEMO_PREFIX_MARK, sizeof DEMO_PREFIX_MARK - 1) != 0) {
        sodium_memzero(key, sizeof key);
        snprintf(err, errlen,
                 "a collection named '%s' exists that demo mode did not make: demo mode would "
                 "take it over (its API key would stop working and the keyless page would show "
                 "its subjects). Serve without --demo, or use another database",
                 DEMO_COLLECTION);
        return -1;
    }
    if (rc == 0 && have[0]) /* demo mode's own: a new key, so that only this process reaches it */
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

/* ------------------------------------------------------------ page */

/* index.html with every placeholder replaced by the token. */
static void serve_page(fvs_req *r, fvs_resp *out) {
    size_t len = 0;
    char *page = NULL, err[256] = "";
    int rc = fvs_asset_read(r->srv, "static/index.html", &page, &len, err, sizeof err);
    if (rc > 0) {
        fvs_error(out, 404, "not_found", "the demo page (static/index.html) is not installed");
        return;
    }
    if (rc < 0) {
        fvs_error(out, 503, "unavailable", "cannot read %s", err);
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
    fvs_reply_bytes(out, 200, "text/html; charset=utf-8", html, o);
    free(html);
    free(page);
    static const char *const headers[][2] = {
        {"Cache-Control", "no-store"},
        {"Content-Security-Policy", PAGE_CSP},
        {"X-Frame-Options", "DENY"},
        {"Referrer-Policy", "no-referrer"},
        {"Permissions-Policy", "camera=(self), microphone=()"},
    };
    for (size_t i = 0; out->ctype && i < sizeof headers / sizeof headers[0]; i++)
        if (fvs_resp_header(out, headers[i][0], headers[i][1])) return;
}

/* The page saying the demo is off (404), or a line of text when even that
 * file is missing. */
static void serve_demo_off(fvs_req *r, fvs_resp *out) {
    size_t len = 0;
    char *page = NULL, err[256] = "";
    int rc = fvs_asset_read(r->srv, "static/demo-off.html", &page, &len, err, sizeof err);
    if (rc < 0) {
        fvs_error(out, 503, "unavailable", "cannot read %s", err);
        return;
    }
    static const char fallback[] = "The demo is switched off (start faceverifyd with --demo).";
    if (page)
        fvs_reply_bytes(out, 404, "text/html; charset=utf-8", page, len);
    else
        fvs_reply_bytes(out, 404, "text/plain; charset=utf-8", fallback, strlen(fallback));
    free(page);
    if (out->ctype) fvs_resp_header(out, "Cache-Control", "no-cache");
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

int fvs_demo_request(const fvs_req *r) {
    return fvs_req_header(r, "X-Demo-Token") != NULL && fvs_req_header(r, "X-API-Key") == NULL;
}

int fvs_demo_authenticate(fvs_req *r, fvs_resp *out) {
    const fvs_server *srv = r->srv;
    const char *tok = fvs_req_header(r, "X-Demo-Token");
    if (!srv->cfg.demo) {
        fvs_error(out, 401, "unauthorized", "demo mode is off: send an X-API-Key");
        return -1;
    }
    size_t want = strlen(srv->demo_token);
    if (!tok || strlen(tok) != want || sodium_memcmp(tok, srv->demo_token, want) != 0) {
        fvs_error(out, 401, "unauthorized", "invalid demo token (reload the page)");
        return -1;
    }
    const char *host = fvs_req_header(r, "Host");
    const char *origin = fvs_req_header(r, "Origin");
    const char *site = fvs_req_header(r, "Sec-Fetch-Site");
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

void fvs_demo_page(fvs_req *r, fvs_resp *out) {
    if (!r->srv->cfg.demo) {
        serve_demo_off(r, out);
    } else if (!host_allowed(r, fvs_req_header(r, "Host"))) {
        /* DNS rebinding: never hand the token to a page under a foreign name. */
        fvs_error(out, 403, "forbidden", "open the demo at http://127.0.0.1:%d/", r->srv->cfg.port);
    } else {
        serve_page(r, out);
    }
}
