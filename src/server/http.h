/*
 * http.h: what a route handler sees of an HTTP request (already fully read,
 * within the body limit) and how it answers.  The libmicrohttpd plumbing
 * lives in http.c, the handlers in routes.c.
 *
 * Request values come from three places, looked up by the same name:
 * multipart/form-data or urlencoded fields (MHD_PostProcessor), a JSON
 * object body (application/json; binary fields as base64 or data: URLs),
 * and the query string.  URLs are never fetched.
 */
#ifndef FVS_HTTP_H
#define FVS_HTTP_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdint.h>

#include "server.h"

#define FVS_MAX_FIELDS 16

typedef struct fvs_field {
    char name[64];
    char *data; /* NUL-terminated for convenience; len excludes it */
    size_t len, cap;
} fvs_field;

typedef struct fvs_req {
    fvs_server *srv;
    struct MHD_Connection *conn;
    const char *method;
    const char *url;
    struct MHD_PostProcessor *pp;
    fvs_field fields[FVS_MAX_FIELDS];
    int nfields;
    int is_json;
    char *body;
    size_t body_len, body_cap;
    size_t received;
    int too_large, bad_body, responded;
    char bad_reason[128];
    json_t *json;        /* parsed JSON object body, or NULL */
    fvs_collection coll; /* set by authentication */
    char key_prefix[16]; /* the authenticated key's public prefix (audit) */
    char request_id[33]; /* random, sent back as X-Request-Id */
    int admitted;        /* counted in the guard's in-flight requests */
    int shed;            /* past capacity: drop the body, answer 503 */
} fvs_req;

typedef struct fvs_resp {
    int status;
    json_t *body;    /* owned */
    int retry_after; /* > 0: a Retry-After header, in seconds */
} fvs_resp;

/* Sets an error response {"error": {"code", "message"}}. */
void fvs_error(fvs_resp *out, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 1 when s[0..len) is well-formed UTF-8 (RFC 3629), else 0. */
int fvs_utf8_valid(const char *s, size_t len);
/* Maps a library status to its HTTP status and code (the one table). */
void fvs_status_error(fvs_resp *out, fv_status st, const char *message);
void fvs_reply(fvs_resp *out, int status, json_t *body);

/* The bytes of a binary field (multipart file, or base64 or data: URL in a
 * JSON string).  Returns 0 and sets *data and *len (*owned: free when done,
 * may be NULL), 1 when absent, -1 after setting a validation error. */
int fvs_req_bytes(fvs_req *r, const char *name, unsigned char **owned, const unsigned char **data,
                  size_t *len, fvs_resp *out);
/* A scalar value as text (JSON numbers and booleans are converted into
 * buf); NULL when absent. */
const char *fvs_req_text(fvs_req *r, const char *name, char *buf, size_t buflen);
/* Parses an optional number in [lo, hi]; 0 ok (default kept when absent),
 * -1 after setting a validation error. */
int fvs_req_number(fvs_req *r, const char *name, double lo, double hi, double *val, fvs_resp *out);

/* A daemon with no listening socket and no threads of its own, serving the
 * same handlers as fvs_http_serve: for the fuzz targets (fuzz/), which hand
 * it one end of a socketpair with MHD_add_connection and drive it with
 * MHD_run.  NULL on failure; stop with MHD_stop_daemon. */
struct MHD_Daemon *fvs_http_start_unlistened(fvs_server *srv);

/* Route dispatch (routes.c): fills out for r. */
void fvs_route(fvs_req *r, fvs_resp *out);

#endif
