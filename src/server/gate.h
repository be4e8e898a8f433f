/*
 * gate.h: faceverifyd's connection gate, in front of libmicrohttpd.
 *
 * libmicrohttpd 0.9.75 owns a socket from accept() on and answers
 * malformed requests itself (HTML, without our headers), cuts header lines
 * at a NUL, and restarts its idle timeout on every byte of a trickled
 * header block.  So faceverifyd accepts connections itself, and the gate
 * reads each request's header block with MSG_PEEK (leaving the bytes for
 * libmicrohttpd) until it is complete, then either hands the connection
 * over or answers a JSON error and closes.  Every answer says
 * Connection: close (http.c), so each request on a connection is a new
 * connection that comes through the gate.
 *
 * Two parts: fvs_gate_check, a pure function from a header block to a
 * verdict (unit-tested in tests/c/test_server_gate.c, fuzzed in
 * fuzz/fuzz_http.c), and the gate thread (fvs_gate_start/stop), which
 * polls the listening socket and the pending connections.
 */
#ifndef FVS_GATE_H
#define FVS_GATE_H

#include <stddef.h>
#include <sys/socket.h>

/* The header block's bounds.  MHD's memory pool per connection is 32 KiB
 * (its default), which the header block must fit with room to spare. */
#define FVS_GATE_MAX_HEAD 16384  /* request line + header lines, bytes -> 431 */
#define FVS_GATE_MAX_TARGET 8192 /* the request target, bytes -> 414 */

typedef enum fvs_gate_state {
    FVS_GATE_MORE = 0, /* no verdict yet: the block is not complete */
    FVS_GATE_PASS,     /* complete and valid: hand the connection over */
    FVS_GATE_REFUSE    /* answer status/code/message, then close */
} fvs_gate_state;

typedef struct fvs_gate_verdict {
    fvs_gate_state state;
    int status;          /* HTTP status when refused */
    const char *code;    /* the API's error code when refused (static) */
    const char *message; /* why, when refused (static; never quotes input) */
    size_t head_len;     /* when passed: bytes of the header block, blank line included */
} fvs_gate_verdict;

/* Judges buf[0..len), the first bytes a connection sent, as the start of
 * an HTTP/1.x request (RFC 9112): request line, header lines, blank line.
 * Pure and thread-safe; buf need not be NUL-terminated and may hold any
 * bytes.  FVS_GATE_MORE while nothing is wrong yet and the block is not
 * complete (a caller whose buffer of FVS_GATE_MAX_HEAD bytes is full gets
 * a 431 instead).  Refused, with the status named:
 *   400  a NUL, bare CR or other control byte; a malformed request line; a
 *        header line without a colon, with white space before it or an
 *        empty or invalid name; obs-fold; Content-Length not digits only
 *        or repeated; Transfer-Encoding with Content-Length, repeated or
 *        other than chunked; a repeated Host, X-API-Key or X-Demo-Token
 *   411  Transfer-Encoding: chunked (faceverifyd wants Content-Length)
 *   414  a request target over FVS_GATE_MAX_TARGET bytes
 *   431  a header block over FVS_GATE_MAX_HEAD bytes
 *   505  an HTTP version other than HTTP/1.0 and HTTP/1.1 */
void fvs_gate_check(const unsigned char *buf, size_t len, fvs_gate_verdict *v);

/* Writes into out (cap bytes) the whole answer for a refusal: status line,
 * Content-Type: application/json, the security headers every answer
 * carries (guard.c), X-Request-Id request_id (32 hex digits), Connection:
 * close, then {"error":{"code":...,"message":...}}.  Returns its length,
 * or 0 when cap is too small.  Pure and thread-safe. */
size_t fvs_gate_answer(int status, const char *code, const char *message, const char *request_id,
                       char *out, size_t cap);

typedef struct fvs_gate fvs_gate;

/* Hands a connection whose header block passed over to the HTTP server.
 * Takes ownership of fd (closes it on failure). */
typedef void (*fvs_gate_handover)(void *cls, int fd, const struct sockaddr *addr,
                                  socklen_t addrlen);

typedef struct fvs_gate_config {
    int listen_fd;       /* listening, non-blocking; the gate closes it on stop */
    int max_pending;     /* connections held by the gate at once (past: closed) */
    int max_per_ip;      /* of those, from one address (past: closed) */
    int request_timeout; /* seconds from accept for the header block (<= 0: 30) */
    int conn_timeout;    /* seconds without a byte before a close (<= 0: request_timeout) */
    fvs_gate_handover handover;
    void *handover_cls;
} fvs_gate_config;

/* Starts the gate's thread.  NULL (errno set) on failure; the listening
 * socket is then still the caller's. */
fvs_gate *fvs_gate_start(const fvs_gate_config *cfg);

/* Stops the thread, closes the pending connections and the listening
 * socket, frees g.  No-op on NULL. */
void fvs_gate_stop(fvs_gate *g);

#endif
