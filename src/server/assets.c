/*
 * assets.c: the one place faceverifyd reads and serves its own files (the
 * OpenAPI document, the docs page, the demo page and its static/ files).
 *
 * Every file is read whole, up to FVS_ASSET_MAX, before anything is
 * answered: a file that cannot be read whole (an I/O error, too large, out
 * of memory) is a JSON 5xx error, never a truncated file with 200.  Files
 * are small and rarely asked for (a browser revalidates with the ETag and
 * gets 304), so there is no cache: an edited file is served at once.
 *
 * Paths: the router hands over only fixed names and /static/{name}, and a
 * static NAME is checked against a strict pattern with a known extension
 * (safe_name), so no request reaches outside <assets>/static/.
 */
#include "server/assets.h"

#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int fvs_asset_read(const fvs_server *srv, const char *rel, char **buf, size_t *len, char *err,
                   size_t errlen) {
    *buf = NULL;
    *len = 0;
    char path[1024];
    if (snprintf(path, sizeof path, "%s/%s", srv->cfg.assets_dir, rel) >= (int)sizeof path) {
        snprintf(err, errlen, "%s: path too long", rel);
        return -1;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT || errno == ENOTDIR) return 1;
        snprintf(err, errlen, "%s: cannot open (errno %d)", rel, errno);
        return -1;
    }
    /* One byte more than the cap tells "too large" from "exactly the cap". */
    char *b = malloc(FVS_ASSET_MAX + 1);
    size_t n = b ? fread(b, 1, FVS_ASSET_MAX + 1, f) : 0;
    int bad = !b ? 1 : ferror(f) ? 2 : n > FVS_ASSET_MAX ? 3 : 0;
    fclose(f);
    if (bad) {
        free(b);
        snprintf(err, errlen, "%s: %s", rel,
                 bad == 1   ? "out of memory"
                 : bad == 2 ? "read error"
                            : "larger than the asset size limit");
        return -1;
    }
    b[n] = 0;
    *buf = b;
    *len = n;
    return 0;
}

void fvs_asset_serve(fvs_req *r, fvs_resp *out, const char *rel, const char *ctype) {
    char *buf = NULL, err[256] = "";
    size_t len = 0;
    int rc = fvs_asset_read(r->srv, rel, &buf, &len, err, sizeof err);
    if (rc > 0) {
        fvs_error(out, 404, "not_found", "%s is not installed", rel);
        return;
    }
    if (rc < 0) {
        fvs_error(out, 503, "unavailable", "cannot read %s", err);
        return;
    }
    unsigned char h[16];
    char hex[33], etag[40];
    crypto_generichash(h, sizeof h, (const unsigned char *)buf, len, NULL, 0);
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    snprintf(etag, sizeof etag, "\"%s\"", hex);
    const char *inm = fvs_req_header(r, "If-None-Match");
    int same = inm && strcmp(inm, etag) == 0;
    fvs_reply_bytes(out, same ? 304 : 200, ctype, buf, same ? 0 : len);
    free(buf);
    if (out->ctype) {
        if (fvs_resp_header(out, "Cache-Control", "no-cache") == 0)
            fvs_resp_header(out, "ETag", etag);
    }
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
static int safe_name(const char *name, size_t n) {
    size_t dots = 0;
    if (n == 0 || n > 64 || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '.')
            dots++;
        else if (!isalnum(c) && c != '-' && c != '_')
            return 0;
    }
    return dots == 1;
}

void fvs_asset_static(fvs_req *r, fvs_resp *out) {
    const char *name = r->path_name ? r->path_name : "";
    size_t n = r->path_name ? r->path_name_len : 0;
    char rel[96];
    const char *ctype = NULL;
    if (safe_name(name, n)) {
        snprintf(rel, sizeof rel, "static/%.*s", (int)n, name);
        ctype = content_type(rel);
    }
    if (!ctype) {
        fvs_error(out, 404, "not_found", "no static file %.*s", (int)(n > 64 ? 64 : n), name);
        return;
    }
    fvs_asset_serve(r, out, rel, ctype);
    if (out->status == 404) fvs_error(out, 404, "not_found", "no static file %.*s", (int)n, name);
}
