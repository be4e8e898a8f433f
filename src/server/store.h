/*
 * store.h: faceverifyd's data model on top of db.h: schema migrations,
 * collections (tenants) with hashed API keys, subjects (people) and faces
 * (enrolled templates).  The database is the source of truth; the search
 * index (index.h) is derived from it.
 *
 * Every function takes the collection id that the request's API key
 * resolved to and puts it in every WHERE clause, so a key can never read,
 * match or delete another collection's rows.  Every change to a
 * collection's faces bumps collections.version in the same transaction;
 * the index compares that counter on each request to stay consistent with
 * writes made by other processes.
 *
 * Thread-safety: one mutex per store serialises use of the connection.
 * Return convention: 0 ok, 1 not found / conflict (as documented), -1 a
 * database error with a message in err.
 */
#ifndef FVS_STORE_H
#define FVS_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "faceverify.h"

typedef struct fvs_store fvs_store;

#define FVS_KEY_HASH_BYTES 32
#define FVS_NAME_MAX 200

fvs_store *fvs_store_open(const char *url, char *err, size_t errlen);
void fvs_store_close(fvs_store *st);
const char *fvs_store_backend(const fvs_store *st); /* "sqlite" or "postgres" */
/* Sets the template key (crypto.h; 32 bytes, copied; NULL: none).  With a
 * key, new templates are stored sealed; sealed templates are read with it
 * and plaintext ones as they are.  Call before serving. */
void fvs_store_set_template_key(fvs_store *st, const unsigned char *key);
/* The stored fingerprint of an uploaded image (crypto.h fvs_image_mac)
 * into hex: 0, or 1 (hex "") when no template key is set, in which case
 * no fingerprint is kept: one anybody can recompute would confirm a known
 * photo to whoever holds a copy of the database. */
int fvs_store_image_mac(const fvs_store *st, const void *data, size_t len, char hex[65]);
/* Seals every plaintext template with the key, in transactions of 256
 * rows; *done: rows converted. */
int fvs_store_encrypt_templates(fvs_store *st, int64_t *done, char *err, size_t errlen);

/* Re-seals every template under the store's key (the new one): sealed
 * ones that open with old_key, and plaintext ones; those that open with
 * the new key already are left (a re-run finds nothing to do).  One
 * transaction per collection, read in batches of 256 rows.  *done: rows
 * re-sealed; *unreadable: rows that open with neither key (left as they
 * are: purge-unreadable deletes them). */
int fvs_store_rekey_templates(fvs_store *st, const unsigned char *old_key, int64_t *done,
                              int64_t *unreadable, char *err, size_t errlen);

/* Applies the numbered migrations not yet in schema_migrations, each in
 * its own transaction.  *applied: how many ran (0 on a re-run). */
int fvs_store_migrate(fvs_store *st, int *applied, char *err, size_t errlen);
/* Highest applied migration (0 for an empty database) and the number the
 * code knows. */
int fvs_store_schema_version(fvs_store *st, int *version, char *err, size_t errlen);
int fvs_store_latest_version(void);

/* Largest decision threshold (Euclidean distance) a request or a
 * collection may set (routes.c, createcollection --threshold). */
#define FVS_THRESHOLD_MAX 2.0
/* The identify operating points (false positive identification rates) a
 * collection may set (createcollection --fpir, PATCH /api/v1/collection). */
#define FVS_FPIR_MIN FV_FPIR_MIN
#define FVS_FPIR_MAX FV_FPIR_MAX

/* Longest model id kept (faces.model, collections.model). */
#define FVS_MODEL_ID_MAX 63

typedef struct fvs_collection {
    int64_t id;
    char name[FVS_NAME_MAX + 1];
    double threshold; /* <= 0: none, use the model's, else the engine's */
    /* The model new templates are made with and searches use (models.h):
     * FV_MODEL_ID or a trained model's id. */
    char model[FVS_MODEL_ID_MAX + 1];
    /* Its search backend (src/search/search.h name); "": the server's
     * --index-backend. */
    char index_backend[32];
    /* Decision policy (migration 6); unset: the server's defaults.
     * fmr: verify's false-match rate (> 0 when set); fpir: identify's
     * false positive identification rate (> 0 when set); min_quality: the
     * enrolment quality gate in [0,1] (< 0 when unset). */
    double fmr, fpir, min_quality;
} fvs_collection;

/* Creates collection c->name with c's threshold, model ("": FV_MODEL_ID)
 * and index_backend ("": none); c->id is ignored and *id set.  1 when the
 * name is taken. */
int fvs_collection_create(fvs_store *st, const fvs_collection *c, const char *key_prefix,
                          const unsigned char *key_hash, int64_t *id, char *err, size_t errlen);
/* Sets the collection's decision policy: fmr, fpir (<= 0: unset) and
 * min_quality (< 0: unset).  1 when no such collection. */
int fvs_collection_set_policy(fvs_store *st, int64_t coll, double fmr, double fpir,
                              double min_quality, char *err, size_t errlen);
/* Sets (threshold > 0) or clears (<= 0) the collection's threshold
 * override.  1 when no such collection. */
int fvs_collection_set_threshold(fvs_store *st, int64_t coll, double threshold, char *err,
                                 size_t errlen);
/* Sets (backend non-empty) or clears (NULL or "") the collection's search
 * backend.  1 when no such collection. */
int fvs_collection_set_index_backend(fvs_store *st, int64_t coll, const char *backend, char *err,
                                     size_t errlen);
/* Sets the model of collection coll; *stale: its templates made by another
 * model (they need re-enrolment to be searched or compared).  Templates
 * are never changed.  1 when no such collection. */
int fvs_collection_set_model(fvs_store *st, int64_t coll, const char *model, int64_t *stale,
                             char *err, size_t errlen);
/* The collection's templates: *total, and *stale, those not made by model
 * (subject > 0: of that subject only). */
int fvs_template_counts(fvs_store *st, int64_t coll, int64_t subject, const char *model,
                        int64_t *total, int64_t *stale, char *err, size_t errlen);
/* 1 when no such collection. */
int fvs_collection_set_key(fvs_store *st, const char *name, const char *key_prefix,
                           const unsigned char *key_hash, char *err, size_t errlen);
/* The stored key prefix of collection name into buf.  1 when no such
 * collection. */
int fvs_collection_key_prefix(fvs_store *st, const char *name, char *buf, size_t len, char *err,
                              size_t errlen);
/* Finds the collection whose key has this prefix and hash (the hash is
 * compared in constant time).  1 when none matches. */
int fvs_collection_by_key(fvs_store *st, const char *key_prefix, const unsigned char *key_hash,
                          fvs_collection *out, char *err, size_t errlen);
int fvs_collection_exists(fvs_store *st, const char *name, int *exists, char *err, size_t errlen);
int fvs_collection_version(fvs_store *st, int64_t coll, int64_t *version, char *err, size_t errlen);

/* Subject metadata is the caller's small JSON object, stored and echoed
 * as text: capped in size (its compact JSON text) and nesting depth so
 * that one subject cannot hold megabytes or a structure deep enough to
 * strain every later reader.  Both caps are in the README and
 * openapi.json.  fvs_metadata_check: 0 when meta is within them, else -1
 * with a message naming the cap (the API's 400, an import's refusal). */
#define FVS_METADATA_MAX_BYTES 16384
#define FVS_METADATA_MAX_DEPTH 16
int fvs_metadata_check(const json_t *meta, char *err, size_t errlen);

/* Subjects, as JSON objects {id, name, metadata, faces, created_at}. */
int fvs_subject_create(fvs_store *st, int64_t coll, const char *name, const json_t *metadata,
                       json_t **out, char *err, size_t errlen); /* 1: name taken */
int fvs_subject_get(fvs_store *st, int64_t coll, int64_t id, json_t **out, char *err,
                    size_t errlen); /* 1: not found */
int fvs_subject_list(fvs_store *st, int64_t coll, int64_t limit, int64_t offset, json_t **results,
                     int64_t *count, char *err, size_t errlen);
int fvs_subject_delete(fvs_store *st, int64_t coll, int64_t id, char *err,
                       size_t errlen); /* 1: not found */

/* Faces, as JSON objects {id, subject_id, model, box, score, image_sha256,
 * created_at}. */
typedef struct fvs_face_row {
    const char *model;
    const float *embedding; /* FV_EMBED_DIM floats */
    float left, top, right, bottom, score;
    const char *image_sha256; /* hex */
    /* The face's fv_quality score in [0,1]; < 0: unknown (stored NULL:
     * a bare embedding, or not measured) */
    double quality;
    /* The photo's import fingerprint (fvs_store_import_fp) when no
     * template key is set; NULL otherwise and outside bulk imports. */
    const char *import_fp;
    int64_t created_at; /* seconds since the epoch; 0: now */
} fvs_face_row;
int fvs_face_insert(fvs_store *st, int64_t coll, int64_t subject, const fvs_face_row *row,
                    json_t **out, char *err, size_t errlen); /* 1: no such subject */
int fvs_face_list(fvs_store *st, int64_t coll, int64_t subject, json_t **out, char *err,
                  size_t errlen); /* 1: no such subject */
int fvs_face_delete(fvs_store *st, int64_t coll, int64_t subject, int64_t face, char *err,
                    size_t errlen); /* 1: not found */

/* ---- bulk import and export (bulk.c) ---- */

/* Whether a template key is set. */
int fvs_store_has_template_key(const fvs_store *st);
/* Seals emb with the store's key for the place (a, b) (crypto.h
 * fvs_template_seal; an export file uses a = 0, b = the subject's
 * position).  -1 when no key is set. */
int fvs_store_seal(const fvs_store *st, int64_t a, int64_t b, const float emb[FV_EMBED_DIM],
                   unsigned char *out);
/* Opens what fvs_store_seal made for (a, b) (crypto.h fvs_template_open,
 * the same returns). */
int fvs_store_open_sealed(const fvs_store *st, int64_t a, int64_t b, const void *blob, size_t n,
                          float emb[FV_EMBED_DIM], char *err, size_t errlen);

/* The fingerprint by which a bulk import recognises a photo it already
 * enrolled into hex (64 hex characters): with a template key, the same
 * keyed MAC the API stores in image_sha256 (fvs_store_image_mac), *column
 * "image_sha256"; without one, BLAKE2b keyed with a random per-database
 * secret (store_secrets, made on first use), *column "import_fp".  Never a
 * plain hash: that would confirm a known photo to anyone holding the
 * file.  0 ok, -1 with a message. */
int fvs_store_import_fp(fvs_store *st, const void *data, size_t len, char hex[65],
                        const char **column, char *err, size_t errlen);
/* *exists: whether collection coll holds a face with fingerprint hex in
 * image_sha256 or import_fp. */
int fvs_face_fp_exists(fvs_store *st, int64_t coll, const char *hex, int *exists, char *err,
                       size_t errlen);
/* Stores n faces (rows[i] of subject subjects[i]) as fvs_face_insert
 * does, in one transaction: all or none; ids[i] receives each new id.
 * 1 when a subject does not exist (nothing stored). */
int fvs_faces_insert_many(fvs_store *st, int64_t coll, size_t n, const int64_t *subjects,
                          const fvs_face_row *rows, int64_t *ids, char *err, size_t errlen);
/* The id of subject name in coll.  1 when there is none. */
int fvs_subject_find(fvs_store *st, int64_t coll, const char *name, int64_t *id, char *err,
                     size_t errlen);
/* One stored face with its opened template, for an export. */
typedef struct fvs_face_full {
    int64_t id, subject_id, created_at;
    const char *model, *image_sha256; /* image_sha256 may be NULL */
    float left, top, right, bottom, score;
    double quality; /* < 0: unknown */
    const float *embedding;
} fvs_face_full;
typedef int (*fvs_face_full_fn)(void *ctx, const fvs_face_full *f);
/* Calls fn for every face of coll, by subject then id, whatever its
 * model.  A template that does not open (the store's key) stops the walk:
 * -1 with a message starting with FVS_TKEY_ERROR.  fn must not use the
 * store; a nonzero return from it stops with -1. */
int fvs_faces_each(fvs_store *st, int64_t coll, fvs_face_full_fn fn, void *ctx, char *err,
                   size_t errlen);

/* Calls fn for every template of the collection made by model (subject <=
 * 0: all subjects).  name is valid during the call only.  A sealed template
 * that cannot be opened (no key, wrong key, altered row) is passed with
 * embedding NULL, so that the caller serves the others and names it; the
 * call then returns 0 with why in err (a message starting with
 * FVS_TKEY_ERROR; err is "" when every template opened).  quality: the
 * template's stored face quality score, < 0 when NULL (unknown). */
typedef int (*fvs_template_fn)(void *ctx, int64_t face_id, int64_t subject_id, const char *name,
                               const float *embedding, double quality);
int fvs_templates(fvs_store *st, int64_t coll, int64_t subject, const char *model,
                  fvs_template_fn fn, void *ctx, char *err, size_t errlen);

/* A stored template that does not open with the store's template key. */
typedef struct fvs_bad_template {
    int64_t coll, subject, face;
} fvs_bad_template;
/* Finds every sealed template of collection coll (<= 0: of all) that does
 * not open (no key, another key, an altered or moved row): *out (free()
 * it; NULL when none) and *n, in face id order, and why (the last reason,
 * may be NULL).  With purge, deletes each in its own transaction, logged
 * for the search index and moving the collection's version, and then
 * scrubs the SQLite WAL as a DELETE through the API does. */
int fvs_store_unreadable(fvs_store *st, int64_t coll, int purge, fvs_bad_template **out, size_t *n,
                         char *why, size_t whylen, char *err, size_t errlen);

/* The audit log: who (collection, key prefix) did what (action) to which
 * ids, when, in which request, and how it ended.  Never images, templates
 * or distances: detail is a small JSON object of ids and counts. */
typedef struct fvs_audit_entry {
    int64_t collection_id; /* <= 0: none */
    const char *key_prefix;
    const char *action;          /* e.g. "face.enroll", "identify" */
    int64_t subject_id, face_id; /* <= 0: none */
    const char *request_id;
    int status;          /* HTTP status */
    const char *outcome; /* "ok" or the error code */
    const char *detail;  /* JSON object text, or NULL */
} fvs_audit_entry;
int fvs_audit_write(fvs_store *st, const fvs_audit_entry *e, char *err, size_t errlen);
/* Newest first, at most limit entries with id < before_id (<= 0: from the
 * newest); coll > 0 and/or coll_name (non-NULL, non-empty) narrow it to one
 * collection.  *results: a JSON array of entries. */
int fvs_audit_list(fvs_store *st, int64_t coll, const char *coll_name, int64_t limit,
                   int64_t before_id, json_t **results, char *err, size_t errlen);

/* ---- corrections: "this face is not this person" (corrections.c) ---- */

/* One correction: a template (sealed like a face's when a template key is
 * set) and where it came from. */
typedef struct fvs_correction_row {
    const char *model;      /* the model that made the embedding */
    const float *embedding; /* FV_EMBED_DIM floats */
    const char *source;     /* "image", "embedding" or "face" */
    int64_t face_id;        /* source "face": that face's id; else 0 */
    double quality;         /* the face's quality score; < 0: unknown */
} fvs_correction_row;
/* Stores a correction of subject in coll; *id: its id.  1 when there is
 * no such subject; -1 (FVS_TKEY_ERROR) for a plaintext one next to sealed
 * templates, as fvs_face_insert.  Collections' versions are not moved:
 * the search index holds no corrections (they are read per request). */
int fvs_correction_insert(fvs_store *st, int64_t coll, int64_t subject,
                          const fvs_correction_row *row, int64_t *id, char *err, size_t errlen);
/* The subject's corrections, oldest first, as JSON objects
 * {correction_id, subject_id, model, source, face_id, quality_score,
 * created_at} (never the template).  1 when there is no such subject. */
int fvs_correction_list(fvs_store *st, int64_t coll, int64_t subject, json_t **out, char *err,
                        size_t errlen);
/* Deletes correction id of subject (and scrubs it from the SQLite WAL as
 * a face delete does).  1 when there is no such correction of subject. */
int fvs_correction_delete(fvs_store *st, int64_t coll, int64_t subject, int64_t id, char *err,
                          size_t errlen);
/* Calls fn for every correction of coll made by model of the n subjects
 * (at most FVS_CORRECTION_SUBJECTS_MAX; none when n is 0), by subject,
 * then id.  One that does not open is passed with embedding NULL and the
 * call returns 0 with why in err (starting with FVS_TKEY_ERROR; "" when
 * all opened), as fvs_templates.  embedding is valid during the call
 * only. */
#define FVS_CORRECTION_SUBJECTS_MAX 256
typedef int (*fvs_correction_fn)(void *ctx, int64_t id, int64_t subject, const float *embedding);
int fvs_corrections_each(fvs_store *st, int64_t coll, const int64_t *subjects, size_t n,
                         const char *model, fvs_correction_fn fn, void *ctx, char *err,
                         size_t errlen);

/* ---- for the search index (index.c) ---- */

/* The PostgreSQL channel on which every face change is announced; the
 * payload is the collection id. */
#define FVS_CHANGES_CHANNEL "faceverify_faces"

/* The one template with this face id (fn not called when it is gone;
 * embedding NULL and why in err when it cannot be opened, as for
 * fvs_templates). */
int fvs_template_get(fvs_store *st, int64_t coll, int64_t face, const char *model,
                     fvs_template_fn fn, void *ctx, char *err, size_t errlen);
/* Face changes of a collection after seq, in order: op +1 added, -1
 * deleted, 0 older rows were pruned (the reader rebuilds from storage).
 * Written in the same transaction as the change itself. */
typedef int (*fvs_change_fn)(void *ctx, int64_t seq, int64_t face_id, int op);
int fvs_face_changes(fvs_store *st, int64_t coll, int64_t after, fvs_change_fn fn, void *ctx,
                     char *err, size_t errlen);
/* Drops all but the newest keep rows of a collection's change log,
 * leaving an op 0 marker; *pruned: rows deleted. */
int fvs_face_changes_prune(fvs_store *st, int64_t coll, int64_t keep, int64_t *pruned, char *err,
                           size_t errlen);
/* Latest change seq of a collection (0: none yet). */
int fvs_change_seq(fvs_store *st, int64_t coll, int64_t *seq, char *err, size_t errlen);
/* Each collection (valid during the call only). */
typedef int (*fvs_id_fn)(void *ctx, const fvs_collection *c);
int fvs_collection_each(fvs_store *st, fvs_id_fn fn, void *ctx, char *err, size_t errlen);
/* Each face of the collection made by model, in id order, without its
 * embedding: what the index needs next to a persisted index file. */
typedef int (*fvs_meta_fn)(void *ctx, int64_t face_id, int64_t subject_id, const char *name);
int fvs_face_meta(fvs_store *st, int64_t coll, const char *model, fvs_meta_fn fn, void *ctx,
                  char *err, size_t errlen);

#endif
