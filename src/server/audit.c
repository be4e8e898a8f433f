/*
 * audit.c: the audit log of faceverifyd: who (collection, key prefix) did
 * what (action) to which subjects and faces, when, in which request (the
 * X-Request-Id the client saw) and how it ended.
 *
 * What is written is chosen here, from the ids in the request path and in
 * the answer, never copied wholesale from a request or answer: no images,
 * no templates, no distances or similarities (which would let a reader
 * rebuild a template by probing), no subject names or metadata.  For
 * searches the entry keeps the matched subject ids and the number of faces
 * searched: "who searched whom" without the biometric detail.
 *
 * Entries go into the audit_log table (store.c, migration 3) in the same
 * database as the data they describe; rows are written after the action,
 * by the request's own thread.  Reading: GET /api/v1/audit (the calling
 * key's collection only) and `faceverifyd audit [COLLECTION]`.
 */
#include "server/audit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The matched subject ids of an identify answer: one per searched face
 * (null when that face matched no one). */
static json_t *match_ids(const json_t *faces) {
    json_t *ids = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(faces, i, f) {
        json_t *m = json_object_get(f, "match");
        json_t *id = m ? json_object_get(m, "id") : NULL;
        json_array_append_new(ids, json_is_integer(id) ? json_integer(json_integer_value(id))
                                                       : json_null());
    }
    return ids;
}

/* The subjects excluded from an identify answer's faces by corrections
 * (routes.c, corrections.h): how many candidates were so marked. */
static json_int_t excluded_count(const json_t *faces) {
    json_int_t n = 0;
    size_t i, j;
    json_t *f, *c;
    json_array_foreach(faces, i, f) {
        json_array_foreach(json_object_get(f, "candidates"), j, c) {
            n += json_object_get(c, "excluded") != NULL;
        }
    }
    return n;
}

/* A correction's id and source ("image", "embedding", "face" and the
 * face's id), or a list's count, into detail. */
static void correction_detail(const json_t *body, json_t *detail) {
    static const char *const keys[] = {"correction_id", "source", "face_id", "count"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(body, keys[i]);
        if (json_is_integer(v) || json_is_string(v)) json_object_set(detail, keys[i], v);
    }
}

/* An enrolment's quality score, whether it was forced past the gate, and
 * the subject it duplicates (the duplicate warning), into detail. */
static void enrol_detail(const json_t *body, json_t *detail) {
    json_t *score = json_object_get(json_object_get(body, "quality"), "score");
    if (json_is_number(score)) json_object_set(detail, "quality", score);
    json_t *forced = json_object_get(body, "forced");
    if (json_is_true(forced)) json_object_set(detail, "forced", forced);
    size_t i;
    json_t *w;
    json_array_foreach(json_object_get(body, "warnings"), i, w) {
        json_t *code = json_object_get(w, "code");
        json_t *sid = json_object_get(json_object_get(w, "subject"), "id");
        if (json_is_string(code) && strcmp(json_string_value(code), "duplicate") == 0 &&
            json_is_integer(sid))
            json_object_set(detail, "duplicate_of", sid);
    }
}

/* A batch enrolment's item count and the ids of the faces it stored. */
static void batch_detail(const json_t *body, json_t *detail) {
    json_t *ids = json_array();
    size_t i;
    json_t *res;
    json_array_foreach(json_object_get(body, "results"), i, res) {
        json_t *id = json_object_get(json_object_get(res, "face"), "id");
        if (json_is_integer(id)) json_array_append(ids, id);
    }
    json_t *count = json_object_get(body, "count");
    if (json_is_integer(count)) json_object_set(detail, "items", count);
    json_object_set_new(detail, "face_ids", ids);
}

void fvs_audit_request(fvs_req *r, const char *action, int64_t subject_id, int64_t face_id,
                       const fvs_resp *out) {
    const json_t *body = out->body;
    char outcome[64] = "ok";
    if (out->status >= 400) {
        const char *code =
            json_string_value(json_object_get(json_object_get(body, "error"), "code"));
        snprintf(outcome, sizeof outcome, "%s", code ? code : "error");
    }
    json_t *detail = json_object();
    if (out->status < 300 && body) {
        json_t *id = json_object_get(body, "id");
        if (strcmp(action, "subject.create") == 0 && json_is_integer(id))
            subject_id = json_integer_value(id);
        if (strcmp(action, "face.enroll") == 0 && json_is_integer(id))
            face_id = json_integer_value(id);
        json_t *faces = json_object_get(body, "faces");
        json_t *results = json_object_get(body, "results");
        if (strcmp(action, "identify") == 0 && json_is_array(faces)) {
            json_object_set_new(detail, "faces", json_integer((json_int_t)json_array_size(faces)));
            json_object_set_new(detail, "matches", match_ids(faces));
            if (excluded_count(faces))
                json_object_set_new(detail, "excluded", json_integer(excluded_count(faces)));
        } else if (strcmp(action, "identify.embeddings") == 0 && json_is_array(results)) {
            json_object_set_new(detail, "queries",
                                json_integer((json_int_t)json_array_size(results)));
            json_object_set_new(detail, "matches", match_ids(results));
            if (excluded_count(results))
                json_object_set_new(detail, "excluded", json_integer(excluded_count(results)));
        } else if (strcmp(action, "subject.list") == 0 || strcmp(action, "audit.read") == 0) {
            json_t *n = json_object_get(body, "count");
            if (!json_is_integer(n) && json_is_array(results))
                n = json_integer((json_int_t)json_array_size(results));
            else
                json_incref(n);
            if (n) json_object_set_new(detail, "count", n);
        }
        if (strcmp(action, "face.enroll") == 0) enrol_detail(body, detail);
        if (strcmp(action, "face.enroll_batch") == 0) batch_detail(body, detail);
        if (strncmp(action, "correction.", 11) == 0) correction_detail(body, detail);
        json_t *reason = json_object_get(body, "reason");
        if (strcmp(action, "subject.verify") == 0 && json_is_string(reason))
            json_object_set(detail, "reason", reason);
        json_t *verified = json_object_get(body, "verified");
        if (json_is_boolean(verified)) json_object_set(detail, "verified", verified);
    }
    char *detail_text = json_object_size(detail) ? json_dumps(detail, JSON_COMPACT) : NULL;
    json_decref(detail);
    fvs_audit_entry e = {r->coll.id,    r->key_prefix, action,  subject_id, face_id,
                         r->request_id, out->status,   outcome, detail_text};
    char err[256];
    if (fvs_audit_write(r->srv->store, &e, err, sizeof err))
        fprintf(stderr, "faceverifyd: audit log: request %s (%s): %s\n", r->request_id, action,
                err);
    free(detail_text);
}
