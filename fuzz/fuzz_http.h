/*
 * fuzz_http.h: an in-process faceverifyd for the request-parsing fuzz
 * targets.  fz_http_request() hands the raw bytes of one HTTP request to
 * the server's real libmicrohttpd handlers (http.c, routes.c) over a
 * socketpair and drives the daemon until it closes the connection: no
 * network, no threads.  The server has a temporary SQLite database with one
 * collection (its key: fz_http_key()) and no models, so the image routes
 * answer 503 after their bodies were parsed.
 */
#ifndef FZ_HTTP_H
#define FZ_HTTP_H

#include <stddef.h>
#include <stdint.h>

/* Sets the server up on the first call; aborts if that fails (a harness
 * fault, not a finding). */
const char *fz_http_key(void);

/* Sends one request and waits for the connection to close.  Returns the
 * HTTP status of the (first) response, 0 when none came back.  Aborts when
 * the response is a 5xx other than 503 (models or database unavailable):
 * a 500 on bad input is a finding. */
int fz_http_request(const uint8_t *req, size_t len);

/* Builds "POST|GET path" with the key, Connection: close, content_type and
 * a Content-Length for body, then calls fz_http_request. */
int fz_http_post(const char *method, const char *path, const char *content_type,
                 const uint8_t *body, size_t len);

#endif
