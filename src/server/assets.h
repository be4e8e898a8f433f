/*
 * assets.h: the server's files under its assets folder (openapi.json,
 * docs.html, static/): the one reader, with a size cap, and the one static
 * file server.  See assets.c for the design.
 */
#ifndef FVS_ASSETS_H
#define FVS_ASSETS_H

#include <stddef.h>

#include "server/http.h"

/* The largest asset served or read, in bytes. */
#define FVS_ASSET_MAX ((size_t)2 * 1024 * 1024)

/* Reads <assets>/<rel> whole into *buf (NUL-ended, *len bytes without the
 * NUL; the caller frees it).  0 ok; 1 no such file; -1 when it cannot be
 * read whole (an I/O error, larger than FVS_ASSET_MAX, out of memory),
 * with the reason in err.  Thread-safe. */
int fvs_asset_read(const fvs_server *srv, const char *rel, char **buf, size_t *len, char *err,
                   size_t errlen);

/* Answers r with the asset rel as ctype (static storage): 200 with an
 * ETag (a hash of the bytes) and Cache-Control: no-cache, or 304 when the
 * request's If-None-Match names that ETag; 404 not_found when the file is
 * missing; a 5xx JSON error, never part of the file, when it cannot be
 * read whole. */
void fvs_asset_serve(fvs_req *r, fvs_resp *out, const char *rel, const char *ctype);

/* The handler of GET /static/{name}: NAME of letters, digits, '-', '_'
 * and one '.' before a known extension (so no '/' and no traversal), served
 * from <assets>/static/ by fvs_asset_serve with its type; anything else
 * is 404. */
void fvs_asset_static(fvs_req *r, fvs_resp *out);

#endif
