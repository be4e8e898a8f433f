/*
 * http.h: what a route handler sees of an HTTP request (already fully read,
 * within the body limit) and how it answers.  The libmicrohttpd plumbing
 * lives in http.c, which is the only file that sees libmicrohttpd: this
 * header does not include it, so a handler cannot reach past it (the fuzz
 * harness, which drives the daemon itself, uses http_mhd.h).  The route
 * table and the handlers are in routes.c.
 *
 * Request values come from three places, looked up by the same name:
 * multipart/form-data or urlencoded fields (libmicrohttpd's post
 * processor), a JSON object body (application/json; binary fields as
 * base64 or data: URLs), and the query string.  URLs are never fetched.
 *
 * An answer (fvs_resp) is either a JSON document or bytes with a content
 * type, plus any extra headers; it owns all of them, and fvs_resp_free is
 * the one place they are freed.
 */
#ifndef FVS_HTTP_H
#define FVS_HTTP_H

#include <jansson.h>
#include <stdint.h>

#include "server/server.h"

/* libmicrohttpd's objects, opaque here (only http.c dereferences them). */
struct MHD_Connection;
struct MHD_PostProcessor;
struct fvs_resp;

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
    json_t *json; /* parsed JSON object body, or NULL */
    /* The path's parameters, set by the router (routes.c) from the
     * route's pattern: {id}, {face_id} and {correction_id} (positive
     * ids, 0 when the pattern has none) and {name} (the raw segment, not
     * NUL-ended). */
    int64_t path_id, path_face_id, path_correction_id;
    const char *path_name;
    size_t path_name_len;
    fvs_collection coll; /* set by authentication */
    char key_prefix[16]; /* the authenticated key's public prefix (audit) */
    char request_id[33]; /* random, sent back as X-Request-Id */
    int admitted;        /* counted in the guard's in-flight requests */
    const void *route;   /* the route fvs_route_check accepted (routes.c's) */
    /* http.c's own state of the reading (see on_request). */
    int started;              /* the headers' callback has run */
    int nul_in_url;           /* the raw request target holds %00 */
    double deadline;          /* monotonic seconds by which the body must be in */
    struct fvs_resp *refusal; /* refused on its headers: sent once the dropped body is in */
    /* For metrics and the request log (metrics.h): the route's path
     * pattern once the path matched, even when the request is then
     * refused (401, 405, 429; NULL: no path matched), set by the router;
     * and the monotonic time of the request line, set by http.c. */
    const char *route_path;
    double t_start;
} fvs_req;

#define FVS_RESP_MAX_HEADERS 8

/* One answer.  body (JSON) and bytes are exclusive: the fvs_reply* calls
 * replace whatever was set before, extra headers included. */
typedef struct fvs_resp {
    int status;
    json_t *body;         /* owned: a JSON answer, or NULL */
    unsigned char *bytes; /* owned: a non-JSON answer of len bytes (ctype set) */
    size_t len;
    const char *ctype; /* bytes' Content-Type; static storage */
    struct {
        char *name, *value;          /* owned */
    } headers[FVS_RESP_MAX_HEADERS]; /* extra headers; they win over the defaults */
    int nheaders;
    int retry_after; /* > 0: a Retry-After header, in seconds */
} fvs_resp;

/* Frees what out owns and leaves it empty (status and retry_after kept).
 * out may be empty already. */
void fvs_resp_free(fvs_resp *out);

/* Sets an error response {"error": {"code", "message"}}. */
void fvs_error(fvs_resp *out, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 1 when s[0..len) is well-formed UTF-8 (RFC 3629), else 0. */
int fvs_utf8_valid(const char *s, size_t len);
/* Maps a library status to its HTTP status and code (the one table). */
void fvs_status_error(fvs_resp *out, fv_status st, const char *message);
/* Sets a JSON answer, taking body (NULL: a 500 is sent). */
void fvs_reply(fvs_resp *out, int status, json_t *body);
/* Sets a non-JSON answer: a copy of data[0..len) sent as ctype (a string
 * of static storage).  Out of memory: a 503 JSON error instead. */
void fvs_reply_bytes(fvs_resp *out, int status, const char *ctype, const void *data, size_t len);
/* Adds a header to out's answer (after its fvs_reply*), replacing the
 * server's default of that name; copies both.  0 ok; -1 when out of memory
 * or out of room, after turning out into a 503 JSON error. */
int fvs_resp_header(fvs_resp *out, const char *name, const char *value);

/* The client's address (IPv4 or IPv6, no port) into buf; "" when unknown. */
void fvs_req_remote(const fvs_req *r, char *buf, size_t len);

/* A request header's value (case-insensitive name), NULL when absent. */
const char *fvs_req_header(const fvs_req *r, const char *name);

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

/* Route dispatch (routes.c), in two steps so that nothing of a body is
 * read or parsed for a request that is refused anyway.  fvs_route_check
 * runs on the request line and headers alone: it finds r's route in the
 * route table and authenticates it (key or demo token, rate limit); 0 when
 * r may go on (the route kept in r->route), -1 after filling out (404, 405,
 * 401, 403, 429, 503).  fvs_route_run, once the body is in, runs the
 * checked route's handler and writes its audit entry; fills out. */
int fvs_route_check(fvs_req *r, fvs_resp *out);
void fvs_route_run(fvs_req *r, fvs_resp *out);

/* The route table as a JSON array of {method, path, auth, audit} (for
 * `faceverifyd routes` and the test holding it against openapi.json); a
 * new reference, NULL when out of memory. */
json_t *fvs_routes_json(void);

#endif
