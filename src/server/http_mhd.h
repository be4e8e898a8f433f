/*
 * http_mhd.h: the part of http.c's interface that speaks libmicrohttpd, for
 * the fuzz harness (fuzz/fuzz_http.c), which drives a daemon itself.  Route
 * handlers include http.h only, which keeps libmicrohttpd out of their
 * reach.
 */
#ifndef FVS_HTTP_MHD_H
#define FVS_HTTP_MHD_H

#include <microhttpd.h>

#include "server/http.h"

/* A daemon with no listening socket and no threads of its own, serving the
 * same handlers as fvs_http_serve: for the fuzz targets (fuzz/), which hand
 * it one end of a socketpair with MHD_add_connection and drive it with
 * MHD_run.  NULL on failure; stop with MHD_stop_daemon. */
struct MHD_Daemon *fvs_http_start_unlistened(fvs_server *srv);

#endif
