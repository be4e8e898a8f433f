/*
 * audit.h: one audit log entry per authenticated API request (see audit.c).
 */
#ifndef FVS_AUDIT_H
#define FVS_AUDIT_H

#include <stdint.h>

#include "server/http.h"

/* Records r's action (after its handler filled out): the collection and
 * key prefix, the subject and face ids it named or created, the request
 * id, the HTTP status and outcome, and for searches the matched subject
 * ids.  A failure to write is reported on stderr; the answer stands. */
void fvs_audit_request(fvs_req *r, const char *action, int64_t subject_id, int64_t face_id,
                       const fvs_resp *out);

#endif
