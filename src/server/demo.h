/*
 * demo.h: the interactive demo page (<assets>/static/index.html) and the
 * keyless access it gets in demo mode.  See demo.c for the design.
 */
#ifndef FVS_DEMO_H
#define FVS_DEMO_H

#include <stddef.h>

#include "server/http.h"

/* Demo mode start-up (cfg.demo set): makes the collection "demo" if it is
 * missing, gives it a fresh random API key that nobody is shown (so only the
 * demo page reaches it), and draws the per-process demo token.  0 on
 * success, -1 with a message in err. */
int fvs_demo_init(fvs_server *srv, char *err, size_t errlen);

/* The handler of GET / (and /index.html): the demo page with the token,
 * 403 when the Host is not a local name of this server, or a 404 page
 * saying the demo is off.  Its files under /static/ are assets.c's. */
void fvs_demo_page(fvs_req *r, fvs_resp *out);

/* 1 when r carries the X-Demo-Token header and no X-API-Key: it is to be
 * authenticated by fvs_demo_authenticate instead of by key. */
int fvs_demo_request(const fvs_req *r);

/* Checks a demo request: demo mode on, the token right, the Host a local
 * name of this server, and no sign of a cross-site request (Origin,
 * Sec-Fetch-Site).  On success binds r to the demo collection and returns
 * 0; otherwise fills out (401 or 403) and returns -1. */
int fvs_demo_authenticate(fvs_req *r, fvs_resp *out);

#endif
