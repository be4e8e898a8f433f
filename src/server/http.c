/*
 * http.c: faceverifyd's HTTP plumbing on libmicrohttpd.
 *
 * Connections: faceverifyd listens itself, and the gate (gate.c) holds
 * each new connection until its header block is complete and valid, then
 * hands it to libmicrohttpd (MHD_USE_NO_LISTEN_SOCKET, MHD_add_connection);
 * malformed heads get the gate's JSON answer and never reach MHD.  Every
 * answer here says Connection: close, so that a second request on a
 * connection cannot reach MHD without passing the gate.
 *
 * Threading model: one thread per connection (MHD_USE_THREAD_PER_CONNECTION)
 * with MHD's internal polling thread.  Handlers are blocking and CPU-bound (decode +
 * detect + embed take 0.1-2 s); with a fixed pool, a connection that lands
 * on a busy thread waits behind it with no bound and no answer.  Here every
 * connection is read at once, and the guard (guard.c) admits at most
 * max_inflight requests into the handlers; the rest are answered 503 with
 * Retry-After straight away (load shedding).  A request takes its slot
 * only once its body is complete and its key is valid, so that a client
 * that trickles a body, or has no key, holds no slot.  The connection
 * limit (overall and per IP address) bounds the threads; the connection
 * timeout closes idle connections, and the request timeout (a deadline for
 * the request line, headers and body together, enforced by shrinking the
 * connection's idle timeout to what is left of it) closes trickling
 * (slowloris) ones that send a byte now and then.  The neural network's
 * inner parallelism runs on the engine's own pool, shared by all request
 * threads.
 *
 * Before any of a body is read, on the request line and headers alone
 * (first_call): framing that RFC 9112 says to refuse (repeated or
 * conflicting Content-Length, Content-Length with Transfer-Encoding, a
 * transfer coding other than chunked) is answered 400 and the connection
 * closed, so no smuggled request can follow; a NUL byte in the URL or a
 * header, or a repeated Host, X-API-Key or X-Demo-Token, is a 400; then
 * the route is looked up and the request authenticated (fvs_route_check).
 * A refused request's body is drained unread (never stored or parsed) and
 * the refusal sent at its end, so the client reads it rather than a reset.
 *
 * The gate refuses what libmicrohttpd would answer with its own HTML (a
 * malformed request line or header, an over-long URL or header block, a
 * chunked body); what is left of MHD's log lines goes to log_mhd (quiet),
 * not to stderr.  The framing checks here repeat the gate's, on MHD's view.
 *
 * Bodies: a Content-Length above the limit is refused with 413 on the first
 * callback, before any of the body is read; a body that grows past the
 * limit (only a chunked one could, and the gate refuses those) stops being
 * stored at once and is answered 413 (see the drain note in on_request).
 * multipart/form-data and
 * urlencoded bodies go through MHD_PostProcessor into named fields (a NUL
 * byte in a value, or a field sent twice, is a 400); JSON bodies are
 * buffered, their shape bounded by json_shape_ok (values, nesting) before
 * jansson parses them, so that a small body cannot become a huge tree.
 * After a large body the freed heap is handed back to the system
 * (malloc_trim).  Every path ends in a JSON response: handlers never leave
 * a connection without an answer.
 *
 * Shutdown: SIGTERM/SIGINT are blocked in every thread and taken with
 * sigwait() by the main thread, which stops the gate (no new connections;
 * those it holds are closed), then the daemon, letting running requests
 * finish.
 */
#include "server/http_mhd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "server/gate.h"
#include "server/metrics.h"

/* ------------------------------------------------------------ responses */

void fvs_resp_free(fvs_resp *out) {
    json_decref(out->body);
    out->body = NULL;
    free(out->bytes);
    out->bytes = NULL;
    out->len = 0;
    out->ctype = NULL;
    for (int i = 0; i < out->nheaders; i++) {
        free(out->headers[i].name);
        free(out->headers[i].value);
    }
    out->nheaders = 0;
}

void fvs_reply(fvs_resp *out, int status, json_t *body) {
    fvs_resp_free(out);
    out->status = status;
    out->body = body;
}

void fvs_reply_bytes(fvs_resp *out, int status, const char *ctype, const void *data, size_t len) {
    fvs_resp_free(out);
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy) {
        fvs_error(out, 503, "unavailable", "out of memory");
        return;
    }
    if (len) memcpy(copy, data, len);
    out->status = status;
    out->bytes = copy;
    out->len = len;
    out->ctype = ctype;
}

int fvs_resp_header(fvs_resp *out, const char *name, const char *value) {
    char *n = NULL, *v = NULL;
    if (out->nheaders < FVS_RESP_MAX_HEADERS) {
        n = strdup(name);
        v = strdup(value);
    }
    if (!n || !v) {
        free(n);
        free(v);
        fvs_error(out, 503, "unavailable", "out of memory (response headers)");
        return -1;
    }
    out->headers[out->nheaders].name = n;
    out->headers[out->nheaders].value = v;
    out->nheaders++;
    return 0;
}

const char *fvs_req_header(const fvs_req *r, const char *name) {
    return r->conn ? MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name) : NULL;
}

void fvs_req_remote(const fvs_req *r, char *buf, size_t len) {
    buf[0] = 0;
    const union MHD_ConnectionInfo *ci =
        r->conn ? MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS) : NULL;
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (!sa) return;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, buf,
                  (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, buf,
                  (socklen_t)len);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if none:
 * no overlong forms, surrogates or code points above U+10FFFF (RFC 3629). */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (len > n) return 0;
    unsigned cp = c & (0x3fu >> (len - 1));
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

int fvs_utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (!n) return 0;
        i += n;
    }
    return 1;
}

void fvs_error(fvs_resp *out, int status, const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Messages quote request bytes (names, URLs, parser errors), and jansson
     * refuses strings that are not UTF-8: replace each invalid byte. */
    unsigned char *p = (unsigned char *)msg;
    for (size_t i = 0, len = strlen(msg); i < len;) {
        size_t n = utf8_seq(p + i, len - i);
        if (!n) {
            p[i] = '?';
            n = 1;
        }
        i += n;
    }
    fvs_reply(out, status, json_pack("{s:{s:s, s:s}}", "error", "code", code, "message", msg));
}

/* The one table from library statuses to HTTP statuses. */
void fvs_status_error(fvs_resp *out, fv_status st, const char *message) {
    int http = 500;
    const char *code = fv_status_name(st);
    switch (st) {
    case FV_E_IMAGE_FORMAT:
    case FV_E_IMAGE_CORRUPT:
        http = 400;
        break;
    case FV_E_INVALID_ARGUMENT:
        http = 400;
        code = "validation_error";
        break;
    case FV_E_IMAGE_TOO_LARGE:
        http = 413;
        code = "payload_too_large";
        break;
    case FV_E_NO_FACE:
    case FV_E_MULTIPLE_FACES:
        http = 422;
        break;
    case FV_E_MODEL_MISSING:
    case FV_E_MODEL_CORRUPT:
        http = 503;
        break;
    case FV_E_MODEL_MISMATCH:
        http = 409;
        break;
    case FV_E_NO_MEMORY:
        http = 503;
        code = "unavailable";
        break;
    case FV_E_UNSUPPORTED:
        http = 400;
        code = "validation_error";
        break;
    default:
        http = 500;
        code = "internal_error";
        break;
    }
    fvs_error(out, http, code, "%s", message && *message ? message : fv_strerror(st));
}

/* ------------------------------------------------------------ fields */

static fvs_field *find_field(fvs_req *r, const char *name) {
    for (int i = 0; i < r->nfields; i++)
        if (strcmp(r->fields[i].name, name) == 0) return &r->fields[i];
    return NULL;
}

static int append(char **buf, size_t *len, size_t *cap, const char *data, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 4096;
        while (c < *len + n + 1) c *= 2;
        char *b = realloc(*buf, c);
        if (!b) return -1;
        *buf = b;
        *cap = c;
    }
    if (n) memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size) {
    (void)kind;
    (void)transfer_encoding;
    fvs_req *r = cls;
    if (!key) return MHD_YES;
    /* A text value (urlencoded, or a part with neither a file name nor a
     * non-text type) is read as a C string: a NUL would cut it short, so
     * it is refused.  File parts are bytes. */
    int text = !filename && (!content_type || strncasecmp(content_type, "text/", 5) == 0);
    if (text && size && memchr(data, 0, size)) {
        r->bad_body = 1;
        snprintf(r->bad_reason, sizeof r->bad_reason, "form field %.40s: NUL byte in the value",
                 key);
        return MHD_NO;
    }
    fvs_field *f = find_field(r, key);
    /* The post processor hands one value over in pieces, each at the
     * offset where the last one ended; a value that starts again at 0 is
     * the same name sent a second time, which is refused rather than
     * joined to the first. */
    if (f && (off == 0 ? f->len > 0 : off != f->len)) {
        r->bad_body = 1;
        snprintf(r->bad_reason, sizeof r->bad_reason, "form field %.40s is sent more than once",
                 key);
        return MHD_NO;
    }
    if (!f) {
        if (r->nfields == FVS_MAX_FIELDS || strlen(key) >= sizeof f->name) {
            r->bad_body = 1;
            snprintf(r->bad_reason, sizeof r->bad_reason, "too many or too long form fields");
            return MHD_NO;
        }
        f = &r->fields[r->nfields++];
        snprintf(f->name, sizeof f->name, "%s", key);
        if (append(&f->data, &f->len, &f->cap, "", 0)) return MHD_NO;
    }
    if (append(&f->data, &f->len, &f->cap, data, size)) {
        r->bad_body = 1;
        snprintf(r->bad_reason, sizeof r->bad_reason, "out of memory");
        return MHD_NO;
    }
    return MHD_YES;
}

static json_t *json_field(fvs_req *r, const char *name) {
    return r->json ? json_object_get(r->json, name) : NULL;
}

int fvs_req_bytes(fvs_req *r, const char *name, unsigned char **owned, const unsigned char **data,
                  size_t *len, fvs_resp *out) {
    *owned = NULL;
    fvs_field *f = find_field(r, name);
    if (f) {
        *data = (const unsigned char *)f->data;
        *len = f->len;
        return 0;
    }
    json_t *j = json_field(r, name);
    if (!j || json_is_null(j)) return 1;
    if (!json_is_string(j)) {
        fvs_error(out, 400, "validation_error", "%s: expected a base64 string or data URL", name);
        return -1;
    }
    const char *s = json_string_value(j);
    size_t slen = json_string_length(j);
    if (strncmp(s, "data:", 5) == 0) {
        const char *comma = memchr(s, ',', slen);
        if (!comma || !strstr(s, ";base64") || strstr(s, ";base64") > comma) {
            fvs_error(out, 400, "validation_error", "%s: only base64 data URLs are accepted", name);
            return -1;
        }
        slen -= (size_t)(comma + 1 - s);
        s = comma + 1;
    } else if (strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0) {
        fvs_error(out, 400, "validation_error", "%s: URLs are never fetched; send the bytes", name);
        return -1;
    }
    for (size_t i = 0; i < slen; i++) /* base64 is ASCII; libsodium may not refuse the rest */
        if ((unsigned char)s[i] >= 0x80) {
            fvs_error(out, 400, "validation_error", "%s: not valid base64", name);
            return -1;
        }
    size_t cap = slen / 4 * 3 + 3;
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!buf) {
        fvs_error(out, 503, "unavailable", "out of memory");
        return -1;
    }
    size_t n = 0;
    const char *end = NULL;
    int ok = sodium_base642bin(buf, cap, s, slen, " \t\r\n", &n, &end,
                               sodium_base64_VARIANT_ORIGINAL) == 0 &&
             end == s + slen;
    if (!ok)
        ok = sodium_base642bin(buf, cap, s, slen, " \t\r\n", &n, &end,
                               sodium_base64_VARIANT_URLSAFE) == 0 &&
             end == s + slen;
    if (!ok)
        ok = sodium_base642bin(buf, cap, s, slen, " \t\r\n", &n, &end,
                               sodium_base64_VARIANT_ORIGINAL_NO_PADDING) == 0 &&
             end == s + slen;
    if (!ok) {
        free(buf);
        fvs_error(out, 400, "validation_error", "%s: not valid base64", name);
        return -1;
    }
    *owned = buf;
    *data = buf;
    *len = n;
    return 0;
}

const char *fvs_req_text(fvs_req *r, const char *name, char *buf, size_t buflen) {
    fvs_field *f = find_field(r, name);
    if (f) return f->data;
    json_t *j = json_field(r, name);
    if (j) {
        if (json_is_string(j)) return json_string_value(j);
        if (json_is_integer(j)) {
            snprintf(buf, buflen, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
            return buf;
        }
        if (json_is_real(j)) {
            snprintf(buf, buflen, "%.17g", json_real_value(j));
            return buf;
        }
        if (json_is_boolean(j)) return json_is_true(j) ? "true" : "false";
        if (json_is_null(j)) return NULL;
        return "";
    }
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

int fvs_req_number(fvs_req *r, const char *name, double lo, double hi, double *val, fvs_resp *out) {
    char buf[64];
    const char *s = fvs_req_text(r, name, buf, sizeof buf);
    if (!s) return 0;
    char *end = NULL;
    errno = 0;
    double d = strtod(s, &end);
    if (!*s || *end || errno || !(d >= lo && d <= hi)) {
        fvs_error(out, 400, "validation_error", "%s: expected a number in [%g, %g]", name, lo, hi);
        return -1;
    }
    *val = d;
    return 0;
}

/* ------------------------------------------------------------ MHD glue */

/* The value out sets for header name itself, or NULL. */
static const char *own_header(const fvs_resp *out, const char *name) {
    for (int i = 0; i < out->nheaders; i++)
        if (strcasecmp(out->headers[i].name, name) == 0) return out->headers[i].value;
    return NULL;
}

/* Every answer carries the security headers (guard.c), the request id and,
 * when set, Retry-After.  A response's own headers (e.g. the demo page's
 * CSP) win over the defaults; one value per header.  kind: fvs_csp's. */
static void add_headers(struct MHD_Response *resp, const fvs_req *r, const fvs_resp *out,
                        int kind) {
    for (int i = 0; i < out->nheaders; i++)
        MHD_add_response_header(resp, out->headers[i].name, out->headers[i].value);
    const char *const *h = fvs_security_headers();
    for (int i = 0; h[i]; i += 2)
        if (!own_header(out, h[i])) MHD_add_response_header(resp, h[i], h[i + 1]);
    if (!own_header(out, "Content-Security-Policy"))
        MHD_add_response_header(resp, "Content-Security-Policy", fvs_csp(kind));
    if (!own_header(out, "Cache-Control"))
        MHD_add_response_header(resp, "Cache-Control", fvs_cache_control(kind));
    if (r->request_id[0]) MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    /* Every answer ends its connection: a next request on it would reach
     * libmicrohttpd without passing the gate (gate.h). */
    if (!own_header(out, "Connection")) MHD_add_response_header(resp, "Connection", "close");
    if (out->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", out->retry_after);
        MHD_add_response_header(resp, "Retry-After", ra);
    }
}

static double mono_s(void);

/* Queues out on r's connection: its bytes with their type, else its JSON
 * (a 500 when there is none or it cannot be written), and counts and logs
 * it (metrics.h). */
static enum MHD_Result send_resp(fvs_req *r, const fvs_resp *out) {
    struct MHD_Connection *c = r->conn;
    int status = out->status;
    struct MHD_Response *resp;
    const char *ctype;
    int kind;
    if (out->ctype) {
        resp = MHD_create_response_from_buffer(out->len, out->bytes, MHD_RESPMEM_MUST_COPY);
        ctype = out->ctype;
        kind = strncmp(ctype, "text/html", 9) == 0 ? 1 : 2;
    } else {
        char *text =
            out->body ? json_dumps(out->body, JSON_COMPACT | JSON_REAL_PRECISION(7)) : NULL;
        if (!text) {
            text = strdup("{\"error\":{\"code\":\"internal_error\",\"message\":\"no response\"}}");
            status = 500;
            if (!text) return MHD_NO;
        }
        resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (!resp) free(text);
        ctype = "application/json";
        kind = 0;
    }
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", ctype);
    add_headers(resp, r, out, kind);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    double took = mono_s() - r->t_start;
    fvs_metrics_request(r->srv->metrics, r->route_path, r->method, status, took, out->body);
    fvs_log_request(r, status, took);
    return ret;
}

/* How much of an over-limit chunked body is read and dropped so that the
 * client can read its 413 (see on_request). */
#define DRAIN_LIMIT ((size_t)64 * 1000 * 1000)

/* The JSON parser's bounds (json_shape_ok).  jansson has no memory cap, and
 * a 12 MB body of empty objects becomes about 900 MB of tree; the largest
 * legitimate body (64 queries of 128 numbers, or 16 KB of metadata) has a
 * few thousand values.  A hand-made pre-scan, since jansson offers no such
 * limit: it only counts, jansson still does the parsing. */
#define JSON_MAX_VALUES 65536
#define JSON_MAX_CONTAINERS 8192
#define JSON_MAX_DEPTH 64

/* After a request whose body was at least this large, the freed heap is
 * handed back to the system (malloc_trim), so that one large request does
 * not leave the process holding its peak. */
#define TRIM_AFTER_BYTES ((size_t)1 << 20)

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Queues out at once.  Mid-request, with the body not all in, MHD closes
 * the connection after it.  close: also says so (Connection: close), for
 * framing errors after which the connection's bytes cannot be trusted. */
static enum MHD_Result send_now(fvs_req *r, fvs_resp *out, int close) {
    if (close) fvs_resp_header(out, "Connection", "close");
    r->responded = 1;
    enum MHD_Result ret = send_resp(r, out);
    fvs_resp_free(out);
    return ret;
}

/* Answers 413 at once, mid-request; MHD closes the connection after it. */
static enum MHD_Result refuse_too_large(fvs_req *r) {
    fvs_resp out = {0};
    fvs_error(&out, 413, "payload_too_large", "request body exceeds %zu bytes",
              r->srv->cfg.max_body);
    return send_now(r, &out, 0);
}

/* Answers 408 and closes: the request line, headers and body did not all
 * arrive within the request timeout. */
static enum MHD_Result refuse_timeout(fvs_req *r) {
    fvs_resp out = {0};
    fvs_error(&out, 408, "request_timeout", "the request did not arrive within %d s",
              r->srv->cfg.request_timeout);
    return send_now(r, &out, 1);
}

/* Makes MHD close r's connection when it stays idle past r's deadline (or
 * past the connection timeout, when that comes first): the deadline holds
 * even when no byte comes to run a callback. */
static void arm_deadline(fvs_req *r) {
    if (r->srv->cfg.request_timeout <= 0 || r->srv->cfg.conn_timeout <= 0) return;
    double left = r->deadline - mono_s();
    unsigned t = left < 1 ? 1u : (unsigned)(left + 0.999);
    if (t > (unsigned)r->srv->cfg.conn_timeout) t = (unsigned)r->srv->cfg.conn_timeout;
    MHD_set_connection_option(r->conn, MHD_CONNECTION_OPTION_TIMEOUT, t);
}

/* 1 when the JSON text p[0..n) stays within the parser's bounds (values,
 * containers, nesting), else 0 with why in reason.  Counts only (strings
 * skipped, escapes honoured); a malformed text is left to jansson. */
static int json_shape_ok(const char *p, size_t n, char *reason, size_t rlen) {
    size_t values = 1, containers = 0, depth = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = 0;
            continue;
        }
        if (ch == '"') {
            in_str = 1;
        } else if (ch == '{' || ch == '[') {
            containers++;
            values++;
            if (++depth > JSON_MAX_DEPTH) {
                snprintf(reason, rlen, "JSON body nested deeper than %d levels", JSON_MAX_DEPTH);
                return 0;
            }
        } else if (ch == '}' || ch == ']') {
            if (depth) depth--;
        } else if (ch == ',') {
            values++;
        }
        if (containers > JSON_MAX_CONTAINERS || values > JSON_MAX_VALUES) {
            snprintf(reason, rlen, "JSON body has more than %d values or %d objects and arrays",
                     JSON_MAX_VALUES, JSON_MAX_CONTAINERS);
            return 0;
        }
    }
    return 1;
}

static void req_free(fvs_req *r) {
    if (!r) return;
    int trim = r->received >= TRIM_AFTER_BYTES;
    if (r->admitted) fvs_guard_leave(r->srv->guard);
    if (r->pp) MHD_destroy_post_processor(r->pp);
    for (int i = 0; i < r->nfields; i++) free(r->fields[i].data);
    free(r->body);
    json_decref(r->json);
    if (r->refusal) fvs_resp_free(r->refusal);
    free(r->refusal);
    free(r);
#ifdef __GLIBC__
    if (trim) malloc_trim(0);
#else
    (void)trim;
#endif
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)cls;
    (void)c;
    (void)toe;
    req_free(*con_cls);
    *con_cls = NULL;
}

/* A new request's state, made when its request line is in (MHD's URI log
 * callback, which sees the request target before it is unescaped): the
 * deadline starts here, and %00 is noted here, since the unescaped URL
 * would end at the NUL.  NULL when out of memory (on_request retries). */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *c) {
    fvs_server *srv = cls;
    fvs_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->srv = srv;
    r->conn = c;
    /* request_timeout 0 (a config that sets none, as the fuzz harness's):
     * no deadline. */
    r->t_start = mono_s();
    r->deadline = r->t_start + (srv->cfg.request_timeout > 0 ? srv->cfg.request_timeout : 1e9);
    r->nul_in_url = uri && strstr(uri, "%00") != NULL;
    return r;
}

/* What the headers say, for first_call. */
typedef struct header_scan {
    int content_length, transfer_encoding, host, api_key, demo_token, nul;
    const char *te;
} header_scan;

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size) {
    (void)kind;
    header_scan *h = cls;
    /* libmicrohttpd 0.9.75 already cuts a header line at a NUL and counts
     * the sizes from there, so this catches only what a later version
     * hands over whole; the URL's %00 is caught in on_request_line. */
    if (strlen(key) != key_size || (value && strlen(value) != value_size)) h->nul = 1;
    if (strcasecmp(key, "Content-Length") == 0) {
        h->content_length++;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        h->transfer_encoding++;
        h->te = value;
    } else if (strcasecmp(key, "Host") == 0) {
        h->host++;
    } else if (strcasecmp(key, "X-API-Key") == 0) {
        h->api_key++;
    } else if (strcasecmp(key, "X-Demo-Token") == 0) {
        h->demo_token++;
    }
    return MHD_YES;
}

/* The first callback of a request, on its request line and headers alone,
 * before any of its body is read (see the design note at the top): the
 * framing and header checks, the body limit, then route and key.  A
 * refusal that keeps the connection is kept in r->refusal and sent once
 * the (dropped) body is in. */
static enum MHD_Result first_call(fvs_req *r) {
    fvs_server *srv = r->srv;
    struct MHD_Connection *c = r->conn;
    unsigned char rid[16];
    randombytes_buf(rid, sizeof rid);
    sodium_bin2hex(r->request_id, sizeof r->request_id, rid, sizeof rid);
    if (mono_s() > r->deadline) return refuse_timeout(r);
    header_scan h = {0};
    MHD_get_connection_values_n(c, MHD_HEADER_KIND, scan_header, &h);
    fvs_resp out = {0};
    /* RFC 9112 6.3: a message whose length is ambiguous is refused and the
     * connection closed, or what follows it could run as another request. */
    if (h.content_length > 1 || h.transfer_encoding > 1 ||
        (h.content_length && h.transfer_encoding)) {
        fvs_error(&out, 400, "validation_error",
                  "ambiguous body length: repeated Content-Length or Transfer-Encoding, or both");
        return send_now(r, &out, 1);
    }
    if (h.te && strcasecmp(h.te, "chunked") != 0) {
        fvs_error(&out, 400, "validation_error",
                  "unsupported Transfer-Encoding (only chunked is accepted)");
        return send_now(r, &out, 1);
    }
    if (h.nul || r->nul_in_url) {
        fvs_error(&out, 400, "validation_error", "NUL byte in the %s", h.nul ? "headers" : "URL");
        return send_now(r, &out, 1);
    }
    if (h.host > 1 || h.api_key > 1 || h.demo_token > 1) {
        fvs_error(&out, 400, "validation_error", "repeated Host, X-API-Key or X-Demo-Token header");
        return send_now(r, &out, 1);
    }
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (cl) {
        char *end = NULL;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || end == cl || n > srv->cfg.max_body) return refuse_too_large(r);
    }
    if (fvs_route_check(r, &out)) {
        /* A client waiting for 100 Continue gets the refusal instead of
         * the go-ahead, and sends no body. */
        const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Expect");
        if (expect && strcasecmp(expect, "100-continue") == 0) return send_now(r, &out, 0);
        r->refusal = malloc(sizeof *r->refusal);
        if (!r->refusal) return send_now(r, &out, 1);
        *r->refusal = out;
        return MHD_YES;
    }
    fvs_resp_free(&out);
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    if (ct && (strncasecmp(ct, "multipart/form-data", 19) == 0 ||
               strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0)) {
        r->pp = MHD_create_post_processor(c, 64 * 1024, post_iter, r);
        if (!r->pp) {
            r->bad_body = 1;
            snprintf(r->bad_reason, sizeof r->bad_reason, "malformed form content type");
        }
    } else if (ct && strncasecmp(ct, "application/json", 16) == 0) {
        r->is_json = 1;
    }
    arm_deadline(r);
    return MHD_YES;
}

/* The whole request is in: admission (a slot in the guard), the JSON
 * body's parse, the handler; fills out. */
static void complete(fvs_req *r, fvs_resp *out) {
    if (r->bad_body) {
        fvs_error(out, 400, "validation_error", "%s", r->bad_reason);
        return;
    }
    /* A scrape is answered even at capacity: an overload is when the
     * operator's monitoring needs it most, and it costs no image work. */
    if (r->route_path && strcmp(r->route_path, "/metrics") == 0) {
        fvs_route_run(r, out); /* reads no body */
        return;
    }
    if (fvs_guard_enter(r->srv->guard) != 0) {
        fvs_error(out, 503, "overloaded", "the server is at capacity (%d requests in flight)",
                  r->srv->cfg.max_inflight);
        out->retry_after = 1;
        return;
    }
    r->admitted = 1;
    if (r->is_json && r->body_len) {
        char reason[128];
        if (!json_shape_ok(r->body, r->body_len, reason, sizeof reason)) {
            fvs_error(out, 400, "validation_error", "%s", reason);
            return;
        }
        json_error_t jerr;
        r->json = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
        if (!r->json || !json_is_object(r->json)) {
            fvs_error(out, 400, "validation_error", "body is not a JSON object: %s",
                      r->json ? "wrong type" : jerr.text);
            return;
        }
    }
    fvs_route_run(r, out);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    fvs_server *srv = cls;
    fvs_req *r = *con_cls;
    if (!r) {
        r = on_request_line(srv, NULL, c);
        if (!r) return MHD_NO;
        *con_cls = r;
    }
    if (!r->started) {
        r->started = 1;
        r->method = method;
        r->url = url;
        return first_call(r);
    }
    if (r->responded) {
        *upload_size = 0; /* refused: drop the rest */
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (mono_s() > r->deadline) return refuse_timeout(r);
        arm_deadline(r);
        r->received += n;
        if (r->received > srv->cfg.max_body) {
            /* Past the limit: stop storing and answer 413 at the end.  The
             * excess is drained, up to DRAIN_LIMIT, rather than closed on
             * at once: a close with unread bytes makes the kernel send a
             * reset that destroys the 413 before the client reads it.
             * Beyond that, the connection is closed after the answer. */
            r->too_large = 1;
            if (r->received - srv->cfg.max_body > DRAIN_LIMIT) return refuse_too_large(r);
            return MHD_YES;
        }
        if (r->bad_body || r->refusal) return MHD_YES; /* drained, never stored */
        if (r->pp) {
            if (MHD_post_process(r->pp, upload, n) != MHD_YES && !r->bad_body) {
                r->bad_body = 1;
                snprintf(r->bad_reason, sizeof r->bad_reason, "malformed form body");
            }
        } else if (append(&r->body, &r->body_len, &r->body_cap, upload, n)) {
            r->bad_body = 1;
            snprintf(r->bad_reason, sizeof r->bad_reason, "out of memory");
        }
        return MHD_YES;
    }
    /* The whole request is in: the deadline is over, the idle timeout back. */
    if (srv->cfg.request_timeout > 0 && srv->cfg.conn_timeout > 0)
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT,
                                  (unsigned)srv->cfg.conn_timeout);
    if (r->too_large) return refuse_too_large(r);
    fvs_resp out = {0};
    out.status = 500;
    if (r->refusal) {
        out = *r->refusal;
        memset(r->refusal, 0, sizeof *r->refusal);
    } else {
        complete(r, &out);
    }
    return send_now(r, &out, 0);
}

/* libmicrohttpd's own log lines (a malformed request, a closed socket): an
 * attacker can make one per request, so they are dropped rather than
 * written to stderr; the client gets MHD's error answer and the
 * connection's close. */
static void log_mhd(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    (void)fmt;
    (void)ap;
}

struct MHD_Daemon *fvs_http_start_unlistened(fvs_server *srv) {
    return MHD_start_daemon(MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request,
                            srv, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, NULL, MHD_OPTION_URI_LOG_CALLBACK, on_request_line, srv,
                            MHD_OPTION_EXTERNAL_LOGGER, log_mhd, NULL, MHD_OPTION_END);
}

/* The gate's hand-over (gate.h): MHD owns fd from here, and closes it when
 * it cannot take it (its own per-IP limit, memory). */
static void hand_to_mhd(void *cls, int fd, const struct sockaddr *addr, socklen_t addrlen) {
    (void)MHD_add_connection(cls, fd, addr, addrlen);
}

/* A listening, non-blocking TCP socket on addr; -1 on failure. */
static int listen_on(const struct sockaddr_in *addr) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, (const struct sockaddr *)addr, sizeof *addr) != 0 || listen(fd, 511) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int fvs_http_serve(fvs_server *srv) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by MHD's threads and the gate's */

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)srv->cfg.port);
    if (inet_pton(AF_INET, srv->cfg.host, &addr.sin_addr) != 1) {
        fprintf(stderr, "faceverifyd: --listen: not an IPv4 address: %s\n", srv->cfg.host);
        return 2;
    }
    srv->guard = fvs_guard_create(srv->cfg.max_inflight, srv->cfg.rate_limit, srv->cfg.rate_burst);
    if (!srv->guard) {
        fprintf(stderr, "faceverifyd: out of memory\n");
        return 1;
    }
    /* No listening socket of MHD's own: connections come from the gate. */
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_NO_LISTEN_SOCKET | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
            MHD_USE_POLL | MHD_USE_ITC | MHD_USE_ERROR_LOG,
        0, NULL, NULL, on_request, srv, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)srv->cfg.conn_timeout, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)srv->cfg.max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)srv->cfg.max_conn_per_ip, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
        MHD_OPTION_URI_LOG_CALLBACK, on_request_line, srv, MHD_OPTION_EXTERNAL_LOGGER, log_mhd,
        NULL, MHD_OPTION_END);
    int lfd = d ? listen_on(&addr) : -1;
    const fvs_gate_config gcfg = {.listen_fd = lfd,
                                  .max_pending = srv->cfg.max_connections,
                                  .max_per_ip = srv->cfg.max_conn_per_ip,
                                  .request_timeout = srv->cfg.request_timeout,
                                  .conn_timeout = srv->cfg.conn_timeout,
                                  .handover = hand_to_mhd,
                                  .handover_cls = d};
    fvs_gate *gate = lfd >= 0 ? fvs_gate_start(&gcfg) : NULL;
    if (!gate || (srv->cfg.run_as && fvs_drop_privileges(srv->cfg.run_as))) {
        if (!gate) {
            fprintf(stderr, "faceverifyd: cannot listen on %s:%d\n", srv->cfg.host, srv->cfg.port);
            if (lfd >= 0) close(lfd);
        }
        fvs_gate_stop(gate);
        if (d) MHD_stop_daemon(d);
        fvs_guard_destroy(srv->guard);
        srv->guard = NULL;
        return 1;
    }
    printf("faceverifyd: listening on http://%s:%d (%d requests at once, %d connections, %s "
           "database)\n",
           srv->cfg.host, srv->cfg.port, srv->cfg.max_inflight, srv->cfg.max_connections,
           fvs_store_backend(srv->store));
    fflush(stdout);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    printf("faceverifyd: signal %d, shutting down\n", sig);
    fflush(stdout);
    fvs_gate_stop(gate); /* no new connections; pending ones closed */
    MHD_stop_daemon(d);  /* running requests finish */
    fvs_guard_destroy(srv->guard);
    srv->guard = NULL;
    return 0;
}
