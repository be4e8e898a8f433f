/*
 * store.c: faceverifyd's data model (see store.h) written once in the SQL
 * that SQLite and PostgreSQL share, plus the numbered migrations, which
 * are the only per-dialect SQL.
 *
 * Migrations: schema_migrations(version, applied_at) records what ran;
 * each numbered step runs in its own transaction together with its row in
 * that table, so an interrupted migrate leaves the database at a clean
 * step and a re-run applies only what is missing.  Steps are append-only.
 */
#include "server/store.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/crypto.h"
#include "server/db.h"

struct fvs_store {
    fvs_db *db;
    pthread_mutex_t mu;
    unsigned char tkey[FVS_TKEY_BYTES]; /* template key (crypto.c), when has_tkey */
    int has_tkey;
    unsigned char fp_secret[FVS_TKEY_BYTES]; /* store_secrets 'import_fp', when has_fp */
    int has_fp;
};

typedef struct migration {
    int version;
    const char *sqlite;
    const char *postgres;
} migration;

static const migration MIGRATIONS[] = {
    {1,
     "CREATE TABLE collections (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,"
     " key_prefix TEXT NOT NULL, key_hash BLOB NOT NULL, threshold REAL,"
     " version INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);"
     "CREATE INDEX collections_key_prefix ON collections(key_prefix);"
     "CREATE TABLE subjects (id INTEGER PRIMARY KEY AUTOINCREMENT,"
     " collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,"
     " name TEXT NOT NULL, metadata TEXT, created_at INTEGER NOT NULL,"
     " UNIQUE (collection_id, name));"
     "CREATE TABLE faces (id INTEGER PRIMARY KEY AUTOINCREMENT,"
     " collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,"
     " subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,"
     " model TEXT NOT NULL, embedding BLOB NOT NULL, box_left REAL, box_top REAL,"
     " box_right REAL, box_bottom REAL, score REAL, image_sha256 TEXT,"
     " created_at INTEGER NOT NULL);"
     "CREATE INDEX faces_collection_model ON faces(collection_id, model);"
     "CREATE INDEX faces_subject ON faces(subject_id);",
     "CREATE TABLE collections (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
     " key_prefix TEXT NOT NULL, key_hash BYTEA NOT NULL, threshold DOUBLE PRECISION,"
     " version BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL);"
     "CREATE INDEX collections_key_prefix ON collections(key_prefix);"
     "CREATE TABLE subjects (id BIGSERIAL PRIMARY KEY,"
     " collection_id BIGINT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,"
     " name TEXT NOT NULL, metadata TEXT, created_at BIGINT NOT NULL,"
     " UNIQUE (collection_id, name));"
     "CREATE TABLE faces (id BIGSERIAL PRIMARY KEY,"
     " collection_id BIGINT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,"
     " subject_id BIGINT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,"
     " model TEXT NOT NULL, embedding BYTEA NOT NULL, box_left DOUBLE PRECISION,"
     " box_top DOUBLE PRECISION, box_right DOUBLE PRECISION, box_bottom DOUBLE PRECISION,"
     " score DOUBLE PRECISION, image_sha256 TEXT, created_at BIGINT NOT NULL);"
     "CREATE INDEX faces_collection_model ON faces(collection_id, model);"
     "CREATE INDEX faces_subject ON faces(subject_id);"},
    {2, "CREATE INDEX subjects_collection ON subjects(collection_id, id);",
     "CREATE INDEX subjects_collection ON subjects(collection_id, id);"},
    /* The audit log (audit.c): no foreign keys, so that entries outlive the
     * subjects and faces they name. */
    {3,
     "CREATE TABLE audit_log (id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL,"
     " collection_id INTEGER, key_prefix TEXT, action TEXT NOT NULL, subject_id INTEGER,"
     " face_id INTEGER, request_id TEXT, status INTEGER NOT NULL, outcome TEXT NOT NULL,"
     " detail TEXT);"
     "CREATE INDEX audit_log_collection ON audit_log(collection_id, id);",
     "CREATE TABLE audit_log (id BIGSERIAL PRIMARY KEY, at BIGINT NOT NULL,"
     " collection_id BIGINT, key_prefix TEXT, action TEXT NOT NULL, subject_id BIGINT,"
     " face_id BIGINT, request_id TEXT, status INTEGER NOT NULL, outcome TEXT NOT NULL,"
     " detail TEXT);"
     "CREATE INDEX audit_log_collection ON audit_log(collection_id, id);"},
    /* The change log that lets every faceverifyd apply face adds and
     * deletes to its search index incrementally (index.c). */
    {4,
     "CREATE TABLE face_changes (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
     " collection_id INTEGER NOT NULL, face_id INTEGER NOT NULL, op INTEGER NOT NULL);"
     "CREATE INDEX face_changes_collection ON face_changes(collection_id, seq);",
     "CREATE TABLE face_changes (seq BIGSERIAL PRIMARY KEY,"
     " collection_id BIGINT NOT NULL, face_id BIGINT NOT NULL, op INTEGER NOT NULL);"
     "CREATE INDEX face_changes_collection ON face_changes(collection_id, seq);"},
    /* Per-collection embedding model (models.c; templates already keep
     * theirs in faces.model) and a per-collection search backend (NULL:
     * the server's --index-backend). */
    {5,
     "ALTER TABLE collections ADD COLUMN model TEXT NOT NULL DEFAULT '" FV_MODEL_ID "';"
     "ALTER TABLE collections ADD COLUMN index_backend TEXT;",
     "ALTER TABLE collections ADD COLUMN model TEXT NOT NULL DEFAULT '" FV_MODEL_ID "';"
     "ALTER TABLE collections ADD COLUMN index_backend TEXT;"},
    /* Decision policy per collection (NULL: the server's defaults): the
     * verify operating point (false-match rate), the identify one (false
     * positive identification rate), the enrolment quality gate; and each
     * template's face quality (NULL for templates enrolled before it was
     * measured, or from a bare embedding). */
    {6,
     "ALTER TABLE collections ADD COLUMN fmr REAL;"
     "ALTER TABLE collections ADD COLUMN fpir REAL;"
     "ALTER TABLE collections ADD COLUMN min_quality REAL;"
     "ALTER TABLE faces ADD COLUMN quality REAL;",
     "ALTER TABLE collections ADD COLUMN fmr DOUBLE PRECISION;"
     "ALTER TABLE collections ADD COLUMN fpir DOUBLE PRECISION;"
     "ALTER TABLE collections ADD COLUMN min_quality DOUBLE PRECISION;"
     "ALTER TABLE faces ADD COLUMN quality DOUBLE PRECISION;"},
    /* Bulk import (bulk.c): the fingerprint of each imported photo when
     * no template key is set (keyed with a per-database secret kept in
     * store_secrets; with a key, image_sha256 holds the key's fingerprint
     * and import_fp stays NULL), and indexes for the re-run's look-ups. */
    {7,
     "ALTER TABLE faces ADD COLUMN import_fp TEXT;"
     "CREATE INDEX faces_import_fp ON faces(collection_id, import_fp);"
     "CREATE INDEX faces_image_sha256 ON faces(collection_id, image_sha256);"
     "CREATE TABLE store_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);",
     "ALTER TABLE faces ADD COLUMN import_fp TEXT;"
     "CREATE INDEX faces_import_fp ON faces(collection_id, import_fp);"
     "CREATE INDEX faces_image_sha256 ON faces(collection_id, image_sha256);"
     "CREATE TABLE store_secrets (name TEXT PRIMARY KEY, value BYTEA NOT NULL);"},
    /* Corrections ("this face is not this person", corrections.c): a
     * template per correction, sealed like a face's when a template key is
     * set (for the place (collection, -subject), so that a correction row
     * never opens as a face template), the model that made it, and where it
     * came from ("image", "embedding", or "face" with its face id).  Gone
     * with their subject (ON DELETE CASCADE).  Version 9: version 8 belongs
     * to the unassigned-faces work of issue 19; the two touch different
     * tables, and migrate applies whatever a database lacks in order. */
    {9,
     "CREATE TABLE corrections (id INTEGER PRIMARY KEY AUTOINCREMENT,"
     " collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,"
     " subject_id INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,"
     " model TEXT NOT NULL, embedding BLOB NOT NULL, source TEXT NOT NULL, face_id INTEGER,"
     " quality REAL, created_at INTEGER NOT NULL);"
     "CREATE INDEX corrections_subject ON corrections(collection_id, subject_id, id);",
     "CREATE TABLE corrections (id BIGSERIAL PRIMARY KEY,"
     " collection_id BIGINT NOT NULL REFERENCES collections(id) ON DELETE CASCADE,"
     " subject_id BIGINT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,"
     " model TEXT NOT NULL, embedding BYTEA NOT NULL, source TEXT NOT NULL, face_id BIGINT,"
     " quality DOUBLE PRECISION, created_at BIGINT NOT NULL);"
     "CREATE INDEX corrections_subject ON corrections(collection_id, subject_id, id);"},
};
#define N_MIGRATIONS ((int)(sizeof MIGRATIONS / sizeof MIGRATIONS[0]))

/* A rate that is set (> 0) as REAL, else NULL. */
static fvs_val opt_real(double v) {
    return v > 0 ? fvs_real(v) : fvs_null();
}

int fvs_store_latest_version(void) {
    return MIGRATIONS[N_MIGRATIONS - 1].version;
}

fvs_store *fvs_store_open(const char *url, char *err, size_t errlen) {
    fvs_db *db = fvs_db_open(url, err, errlen);
    if (!db) return NULL;
    fvs_store *st = calloc(1, sizeof *st);
    if (!st) {
        fvs_db_close(db);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->db = db;
    pthread_mutex_init(&st->mu, NULL);
    return st;
}

void fvs_store_close(fvs_store *st) {
    if (!st) return;
    sodium_memzero(st->tkey, sizeof st->tkey);
    sodium_memzero(st->fp_secret, sizeof st->fp_secret);
    fvs_db_close(st->db);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

void fvs_store_set_template_key(fvs_store *st, const unsigned char *key) {
    st->has_tkey = key != NULL;
    if (key)
        memcpy(st->tkey, key, FVS_TKEY_BYTES);
    else
        sodium_memzero(st->tkey, sizeof st->tkey);
}

int fvs_store_image_mac(const fvs_store *st, const void *data, size_t len, char hex[65]) {
    hex[0] = 0;
    if (!st->has_tkey) return 1;
    fvs_image_mac(st->tkey, data, len, hex);
    return 0;
}

const char *fvs_store_backend(const fvs_store *st) {
    return fvs_db_dialect(st->db) == FVS_SQLITE ? "sqlite" : "postgres";
}

/* ------------------------------------------------------------ helpers */

static int64_t now_s(void) {
    return (int64_t)time(NULL);
}

static json_t *iso_time(int64_t t) {
    time_t tt = (time_t)t;
    struct tm tm;
    char buf[32];
    if (!gmtime_r(&tt, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm))
        return json_null();
    return json_string(buf);
}

static int get_int(void *ctx, const fvs_val *c, int n) {
    if (n >= 1) *(int64_t *)ctx = c[0].type == FVS_NULL ? 0 : c[0].i;
    return 0;
}

/* Runs a query whose single result is one integer; *found = rows seen. */
static int query_int(fvs_store *st, const char *sql, const fvs_val *p, int np, int64_t *out,
                     char *err, size_t errlen) {
    *out = -1;
    return fvs_db_query(st->db, sql, p, np, get_int, out, NULL, err, errlen);
}

/* Every transaction here writes.  On SQLite it takes the write lock up
 * front (IMMEDIATE): a deferred transaction that reads, then writes after
 * another process has written, fails at once with SQLITE_BUSY instead of
 * waiting out the busy timeout (found by two faceverifyd processes
 * enrolling into one file at once, tests/py/test_faults.py). */
static int begin(fvs_store *st, char *err, size_t errlen) {
    return fvs_db_exec(st->db, fvs_db_dialect(st->db) == FVS_SQLITE ? "BEGIN IMMEDIATE" : "BEGIN",
                       err, errlen);
}
static int commit(fvs_store *st, char *err, size_t errlen) {
    return fvs_db_exec(st->db, "COMMIT", err, errlen);
}
static void rollback(fvs_store *st) {
    char e[64];
    fvs_db_exec(st->db, "ROLLBACK", e, sizeof e);
}

/* Every change to a collection's faces: the version counter, and on
 * PostgreSQL a notification (delivered at COMMIT) that wakes the index
 * listener of every faceverifyd on the database. */
static int bump_version(fvs_store *st, int64_t coll, char *err, size_t errlen) {
    fvs_val p[1] = {fvs_int(coll)};
    if (fvs_db_query(st->db, "UPDATE collections SET version = version + 1 WHERE id = ?", p, 1,
                     NULL, NULL, NULL, err, errlen))
        return -1;
    if (fvs_db_dialect(st->db) != FVS_POSTGRES) return 0;
    char payload[32];
    snprintf(payload, sizeof payload, "%lld", (long long)coll);
    fvs_val n[2] = {fvs_text(FVS_CHANGES_CHANNEL), fvs_text(payload)};
    return fvs_db_query(st->db, "SELECT pg_notify(?, ?)", n, 2, NULL, NULL, NULL, err, errlen);
}

/* op +1: face added, -1: face deleted (or all of a subject's: face 0 and
 * subject given). */
static int log_change(fvs_store *st, int64_t coll, int64_t face, int op, char *err, size_t errlen) {
    fvs_val p[3] = {fvs_int(coll), fvs_int(face), fvs_int(op)};
    return fvs_db_query(st->db,
                        "INSERT INTO face_changes (collection_id, face_id, op) VALUES (?, ?, ?)", p,
                        3, NULL, NULL, NULL, err, errlen);
}

/* After a delete has committed: no copy of a deleted template may stay in
 * any database file.  secure_delete (db_sqlite.c) zeroes the freed cells
 * in the pages written, but in WAL mode the older frames of those pages,
 * template bytes included, stay in the -wal file until a checkpoint
 * copies the zeroed pages back and the WAL is reset.  A TRUNCATE
 * checkpoint does both and leaves the -wal file empty; it waits (busy
 * timeout) for readers of other processes.  If a reader still blocks it,
 * the delete stands and the next delete or checkpoint finishes the job:
 * the line on stderr says so.  PostgreSQL keeps dead tuples until VACUUM
 * and old WAL segments until they are recycled: docs/security.md says
 * what the operator runs.  st->mu held. */
static void scrub_deleted(fvs_store *st) {
    if (fvs_db_dialect(st->db) != FVS_SQLITE) return;
    int64_t busy = 0;
    char e[256] = "";
    if (query_int(st, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, 0, &busy, e, sizeof e) || busy)
        fprintf(stderr,
                "faceverifyd: the WAL checkpoint after a delete did not complete (%s): deleted "
                "templates may remain in the -wal file until the next checkpoint\n",
                e[0] ? e : "a reader holds the WAL");
}

/* ------------------------------------------------------------ migrations */

/* *done: whether migration version is recorded.  st->mu held. */
static int migration_applied_locked(fvs_store *st, int version, int *done, char *err,
                                    size_t errlen) {
    fvs_val p[1] = {fvs_int(version)};
    int64_t n = 0;
    int rc = query_int(st, "SELECT COUNT(*) FROM schema_migrations WHERE version = ?", p, 1, &n,
                       err, errlen);
    *done = n > 0;
    return rc;
}

/* The schema version is the last step of MIGRATIONS up to which every
 * step is applied (the highest recorded one when all are): a database
 * that has a later step but lacks an earlier one (steps made on two
 * branches, merged with a gap in between) counts as not migrated, and
 * migrate fills the gap. */
int fvs_store_schema_version(fvs_store *st, int *version, char *err, size_t errlen) {
    pthread_mutex_lock(&st->mu);
    int64_t v = 0;
    int rc = fvs_db_exec(st->db,
                         "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY "
                         "KEY, applied_at BIGINT NOT NULL)",
                         err, errlen);
    int all = 1;
    for (int i = 0; !rc && all && i < N_MIGRATIONS; i++) {
        rc = migration_applied_locked(st, MIGRATIONS[i].version, &all, err, errlen);
        if (!rc && all) v = MIGRATIONS[i].version;
    }
    if (!rc && all)
        rc = query_int(st, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", NULL, 0, &v,
                       err, errlen);
    pthread_mutex_unlock(&st->mu);
    *version = (int)v;
    return rc;
}

/* PostgreSQL: an advisory lock makes concurrent `migrate` runs (say, two
 * hosts deploying at once) take turns; the second then finds nothing to
 * do.  SQLite's write lock does the same for a file. */
#define MIGRATE_LOCK "SELECT pg_advisory_lock(7346273)"
#define MIGRATE_UNLOCK "SELECT pg_advisory_unlock(7346273)"

int fvs_store_migrate(fvs_store *st, int *applied, char *err, size_t errlen) {
    int current = 0;
    *applied = 0;
    int pg = fvs_db_dialect(st->db) == FVS_POSTGRES;
    if (pg && fvs_db_exec(st->db, MIGRATE_LOCK, err, errlen)) return -1;
    if (fvs_store_schema_version(st, &current, err, errlen)) {
        char e2[128];
        if (pg) fvs_db_exec(st->db, MIGRATE_UNLOCK, e2, sizeof e2);
        return -1;
    }
    pthread_mutex_lock(&st->mu);
    int rc = 0;
    for (int i = 0; i < N_MIGRATIONS && !rc; i++) {
        const migration *m = &MIGRATIONS[i];
        int done = m->version <= current;
        if (!done && migration_applied_locked(st, m->version, &done, err, errlen)) {
            rc = -1;
            break;
        }
        if (done) continue;
        const char *sql = fvs_db_dialect(st->db) == FVS_SQLITE ? m->sqlite : m->postgres;
        fvs_val p[2] = {fvs_int(m->version), fvs_int(now_s())};
        if (begin(st, err, errlen)) {
            rc = -1;
            break;
        }
        if (fvs_db_exec(st->db, sql, err, errlen) ||
            fvs_db_query(st->db,
                         "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", p, 2,
                         NULL, NULL, NULL, err, errlen) ||
            commit(st, err, errlen)) {
            rollback(st);
            rc = -1;
            break;
        }
        (*applied)++;
    }
    if (pg) {
        char e2[128];
        fvs_db_exec(st->db, MIGRATE_UNLOCK, e2, sizeof e2);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ------------------------------------------------------------ collections */

int fvs_collection_exists(fvs_store *st, const char *name, int *exists, char *err, size_t errlen) {
    fvs_val p[1] = {fvs_text(name)};
    int64_t n = 0;
    pthread_mutex_lock(&st->mu);
    int rc =
        query_int(st, "SELECT COUNT(*) FROM collections WHERE name = ?", p, 1, &n, err, errlen);
    pthread_mutex_unlock(&st->mu);
    *exists = n > 0;
    return rc;
}

int fvs_collection_create(fvs_store *st, const fvs_collection *c, const char *key_prefix,
                          const unsigned char *key_hash, int64_t *id, char *err, size_t errlen) {
    int exists = 0;
    if (fvs_collection_exists(st, c->name, &exists, err, errlen)) return -1;
    if (exists) return 1;
    fvs_val p[10] = {fvs_text(c->name),
                     fvs_text(key_prefix),
                     fvs_blob(key_hash, FVS_KEY_HASH_BYTES),
                     c->threshold > 0 ? fvs_real(c->threshold) : fvs_null(),
                     fvs_text(c->model[0] ? c->model : FV_MODEL_ID),
                     c->index_backend[0] ? fvs_text(c->index_backend) : fvs_null(),
                     fvs_int(now_s()),
                     opt_real(c->fmr),
                     opt_real(c->fpir),
                     c->min_quality >= 0 ? fvs_real(c->min_quality) : fvs_null()};
    pthread_mutex_lock(&st->mu);
    int rc = query_int(st,
                       "INSERT INTO collections (name, key_prefix, key_hash, threshold, model, "
                       "index_backend, created_at, fmr, fpir, min_quality) VALUES (?, ?, ?, ?, ?, "
                       "?, ?, ?, ?, ?) RETURNING id",
                       p, 10, id, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fvs_collection_set_policy(fvs_store *st, int64_t coll, double fmr, double fpir,
                              double min_quality, char *err, size_t errlen) {
    fvs_val p[4] = {opt_real(fmr), opt_real(fpir),
                    min_quality >= 0 ? fvs_real(min_quality) : fvs_null(), fvs_int(coll)};
    int64_t changes = 0;
    pthread_mutex_lock(&st->mu);
    int rc = fvs_db_query(st->db,
                          "UPDATE collections SET fmr = ?, fpir = ?, min_quality = ? WHERE id = ?",
                          p, 4, NULL, NULL, &changes, err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (rc) return -1;
    return changes ? 0 : 1;
}

int fvs_collection_set_threshold(fvs_store *st, int64_t coll, double threshold, char *err,
                                 size_t errlen) {
    fvs_val p[2] = {opt_real(threshold), fvs_int(coll)};
    int64_t changes = 0;
    pthread_mutex_lock(&st->mu);
    int rc = fvs_db_query(st->db, "UPDATE collections SET threshold = ? WHERE id = ?", p, 2, NULL,
                          NULL, &changes, err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (rc) return -1;
    return changes ? 0 : 1;
}

int fvs_collection_set_index_backend(fvs_store *st, int64_t coll, const char *backend, char *err,
                                     size_t errlen) {
    fvs_val p[2] = {backend && *backend ? fvs_text(backend) : fvs_null(), fvs_int(coll)};
    int64_t changes = 0;
    pthread_mutex_lock(&st->mu);
    int rc = fvs_db_query(st->db, "UPDATE collections SET index_backend = ? WHERE id = ?", p, 2,
                          NULL, NULL, &changes, err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (rc) return -1;
    return changes ? 0 : 1;
}

/* Templates of the collection (and subject, when > 0): all, and those not
 * made by model.  st->mu held. */
static int count_templates_locked(fvs_store *st, int64_t coll, int64_t subject, const char *model,
                                  int64_t *total, int64_t *stale, char *err, size_t errlen) {
    fvs_val p[3] = {fvs_int(coll), fvs_int(subject), fvs_int(subject)};
    fvs_val q[4] = {fvs_int(coll), fvs_text(model), fvs_int(subject), fvs_int(subject)};
    if (query_int(st,
                  "SELECT COUNT(*) FROM faces WHERE collection_id = ? AND (? <= 0 OR subject_id "
                  "= ?)",
                  p, 3, total, err, errlen) ||
        query_int(st,
                  "SELECT COUNT(*) FROM faces WHERE collection_id = ? AND model <> ? AND (? <= 0 "
                  "OR subject_id = ?)",
                  q, 4, stale, err, errlen))
        return -1;
    return 0;
}

int fvs_template_counts(fvs_store *st, int64_t coll, int64_t subject, const char *model,
                        int64_t *total, int64_t *stale, char *err, size_t errlen) {
    pthread_mutex_lock(&st->mu);
    int rc = count_templates_locked(st, coll, subject, model, total, stale, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fvs_collection_set_model(fvs_store *st, int64_t coll, const char *model, int64_t *stale,
                             char *err, size_t errlen) {
    fvs_val p[2] = {fvs_text(model), fvs_int(coll)};
    int64_t changes = 0, total = 0;
    *stale = 0;
    pthread_mutex_lock(&st->mu);
    /* One transaction: the count answers for exactly the switch made. */
    int rc = begin(st, err, errlen);
    if (!rc)
        rc = fvs_db_query(st->db, "UPDATE collections SET model = ? WHERE id = ?", p, 2, NULL, NULL,
                          &changes, err, errlen);
    if (!rc && changes) rc = count_templates_locked(st, coll, 0, model, &total, stale, err, errlen);
    if (!rc) rc = commit(st, err, errlen);
    if (rc) rollback(st);
    pthread_mutex_unlock(&st->mu);
    if (rc) return -1;
    return changes ? 0 : 1;
}

int fvs_collection_set_key(fvs_store *st, const char *name, const char *key_prefix,
                           const unsigned char *key_hash, char *err, size_t errlen) {
    fvs_val p[3] = {fvs_text(key_prefix), fvs_blob(key_hash, FVS_KEY_HASH_BYTES), fvs_text(name)};
    int64_t changes = 0;
    pthread_mutex_lock(&st->mu);
    int rc =
        fvs_db_query(st->db, "UPDATE collections SET key_prefix = ?, key_hash = ? WHERE name = ?",
                     p, 3, NULL, NULL, &changes, err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (rc) return -1;
    return changes ? 0 : 1;
}

typedef struct text_out {
    char *buf;
    size_t len;
    int found;
} text_out;

static int text_row(void *ctx, const fvs_val *c, int n) {
    text_out *t = ctx;
    if (n < 1) return 1;
    snprintf(t->buf, t->len, "%s", c[0].type == FVS_TEXT && c[0].s ? c[0].s : "");
    t->found = 1;
    return 0;
}

int fvs_collection_key_prefix(fvs_store *st, const char *name, char *buf, size_t len, char *err,
                              size_t errlen) {
    fvs_val p[1] = {fvs_text(name)};
    text_out t = {buf, len, 0};
    if (len) buf[0] = 0;
    pthread_mutex_lock(&st->mu);
    int rc = fvs_db_query(st->db, "SELECT key_prefix FROM collections WHERE name = ?", p, 1,
                          text_row, &t, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (rc) return -1;
    return t.found ? 0 : 1;
}

/* Fills *out from the columns id, name, threshold, model, index_backend
 * (the policy columns: policy_from_row). */
static void collection_from_row(fvs_collection *out, fvs_val id, fvs_val name, fvs_val threshold,
                                fvs_val model, fvs_val backend) {
    memset(out, 0, sizeof *out);
    out->min_quality = -1;
    out->id = id.i;
    snprintf(out->name, sizeof out->name, "%s", name.type == FVS_TEXT && name.s ? name.s : "");
    out->threshold = threshold.type == FVS_NULL ? 0 : threshold.d;
    snprintf(out->model, sizeof out->model, "%s",
             model.type == FVS_TEXT && model.s ? model.s : FV_MODEL_ID);
    snprintf(out->index_backend, sizeof out->index_backend, "%s",
             backend.type == FVS_TEXT && backend.s ? backend.s : "");
}

/* The policy columns fmr, fpir, min_quality of c[0..2] into *out. */
static void policy_from_row(fvs_collection *out, const fvs_val *c) {
    out->fmr = c[0].type == FVS_REAL ? c[0].d : c[0].type == FVS_INT ? (double)c[0].i : 0;
    out->fpir = c[1].type == FVS_REAL ? c[1].d : c[1].type == FVS_INT ? (double)c[1].i : 0;
    out->min_quality = c[2].type == FVS_REAL ? c[2].d : c[2].type == FVS_INT ? (double)c[2].i : -1;
}

typedef struct key_ctx {
    const unsigned char *hash;
    fvs_collection *out;
    int found;
} key_ctx;

static int key_row(void *ctx, const fvs_val *c, int n) {
    key_ctx *k = ctx;
    if (n < 9 || c[2].type != FVS_BLOB || c[2].n != FVS_KEY_HASH_BYTES) return 0;
    /* Constant-time comparison: the prefix narrowed the search, the hash
     * decides, and its timing tells nothing about the stored value. */
    if (sodium_memcmp(c[2].b, k->hash, FVS_KEY_HASH_BYTES) != 0 || k->found) return 0;
    k->found = 1;
    collection_from_row(k->out, c[0], c[1], c[3], c[4], c[5]);
    policy_from_row(k->out, c + 6);
    return 0;
}

int fvs_collection_by_key(fvs_store *st, const char *key_prefix, const unsigned char *key_hash,
                          fvs_collection *out, char *err, size_t errlen) {
    fvs_val p[1] = {fvs_text(key_prefix)};
    key_ctx k = {key_hash, out, 0};
    pthread_mutex_lock(&st->mu);
    int rc = fvs_db_query(
        st->db,
        "SELECT id, name, key_hash, threshold, model, index_backend, fmr, fpir, min_quality "
        "FROM collections WHERE key_prefix = ?",
        p, 1, key_row, &k, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (rc) return -1;
    return k.found ? 0 : 1;
}

int fvs_collection_version(fvs_store *st, int64_t coll, int64_t *version, char *err,
                           size_t errlen) {
    fvs_val p[1] = {fvs_int(coll)};
    pthread_mutex_lock(&st->mu);
    int rc =
        query_int(st, "SELECT version FROM collections WHERE id = ?", p, 1, version, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ------------------------------------------------------------ subjects */

/* Row: id, name, metadata, created_at, faces. */
static int subject_row(void *ctx, const fvs_val *c, int n) {
    json_t *arr = ctx;
    if (n < 5) return 1;
    json_t *meta = NULL;
    if (c[2].type == FVS_TEXT) meta = json_loads(c[2].s, JSON_DECODE_ANY, NULL);
    json_t *o = json_pack("{s:I, s:s, s:o, s:I, s:o}", "id", (json_int_t)c[0].i, "name",
                          c[1].s ? c[1].s : "", "metadata", meta ? meta : json_null(), "faces",
                          (json_int_t)c[4].i, "created_at", iso_time(c[3].i));
    if (!o) return 1;
    json_array_append_new(arr, o);
    return 0;
}

/* Nesting depth of j (a scalar: 0, an empty or flat object or array: 1),
 * counted no further than limit + 1. */
static int json_depth(const json_t *j, int limit) {
    if (!json_is_object(j) && !json_is_array(j)) return 0;
    if (limit < 0) return 1;
    int deepest = 0;
    if (json_is_object(j)) {
        const char *k;
        const json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            int d = json_depth(v, limit - 1);
            if (d > deepest) deepest = d;
        }
    } else {
        size_t i;
        const json_t *v;
        json_array_foreach(j, i, v) {
            int d = json_depth(v, limit - 1);
            if (d > deepest) deepest = d;
        }
    }
    return 1 + deepest;
}

int fvs_metadata_check(const json_t *meta, char *err, size_t errlen) {
    if (json_depth(meta, FVS_METADATA_MAX_DEPTH) > FVS_METADATA_MAX_DEPTH) {
        snprintf(err, errlen, "metadata: nested deeper than %d levels of objects and arrays",
                 FVS_METADATA_MAX_DEPTH);
        return -1;
    }
    /* json_dumpb writes at most the buffer's size and returns the full
     * length: a probe of the size without allocating the text. */
    char probe[1];
    size_t len = json_dumpb(meta, probe, sizeof probe, JSON_COMPACT);
    if (len == 0 || len > FVS_METADATA_MAX_BYTES) {
        snprintf(err, errlen, "metadata: at most %d bytes of compact JSON text (got %zu)",
                 FVS_METADATA_MAX_BYTES, len);
        return -1;
    }
    return 0;
}

#define SUBJECT_COLS                                                                               \
    "SELECT s.id, s.name, s.metadata, s.created_at, (SELECT COUNT(*) FROM faces f WHERE "          \
    "f.subject_id = s.id) FROM subjects s "

static int subject_get_locked(fvs_store *st, int64_t coll, int64_t id, json_t **out, char *err,
                              size_t errlen) {
    json_t *arr = json_array();
    fvs_val p[2] = {fvs_int(coll), fvs_int(id)};
    int rc = fvs_db_query(st->db, SUBJECT_COLS "WHERE s.collection_id = ? AND s.id = ?", p, 2,
                          subject_row, arr, NULL, err, errlen);
    if (rc || json_array_size(arr) == 0) {
        json_decref(arr);
        return rc ? -1 : 1;
    }
    *out = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    return 0;
}

int fvs_subject_create(fvs_store *st, int64_t coll, const char *name, const json_t *metadata,
                       json_t **out, char *err, size_t errlen) {
    char *meta = metadata ? json_dumps(metadata, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    fvs_val q[2] = {fvs_int(coll), fvs_text(name)};
    fvs_val p[4] = {fvs_int(coll), fvs_text(name), fvs_text(meta), fvs_int(now_s())};
    int64_t n = 0, id = 0;
    pthread_mutex_lock(&st->mu);
    int rc = query_int(st, "SELECT COUNT(*) FROM subjects WHERE collection_id = ? AND name = ?", q,
                       2, &n, err, errlen);
    if (!rc && n > 0) rc = 1;
    if (!rc)
        rc = query_int(st,
                       "INSERT INTO subjects (collection_id, name, metadata, created_at) VALUES "
                       "(?, ?, ?, ?) RETURNING id",
                       p, 4, &id, err, errlen);
    if (!rc) rc = subject_get_locked(st, coll, id, out, err, errlen) ? -1 : 0;
    pthread_mutex_unlock(&st->mu);
    free(meta);
    return rc;
}

int fvs_subject_get(fvs_store *st, int64_t coll, int64_t id, json_t **out, char *err,
                    size_t errlen) {
    pthread_mutex_lock(&st->mu);
    int rc = subject_get_locked(st, coll, id, out, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fvs_subject_list(fvs_store *st, int64_t coll, int64_t limit, int64_t offset, json_t **results,
                     int64_t *count, char *err, size_t errlen) {
    json_t *arr = json_array();
    fvs_val p[3] = {fvs_int(coll), fvs_int(limit), fvs_int(offset)};
    pthread_mutex_lock(&st->mu);
    int rc = query_int(st, "SELECT COUNT(*) FROM subjects WHERE collection_id = ?", p, 1, count,
                       err, errlen);
    if (!rc)
        rc = fvs_db_query(st->db,
                          SUBJECT_COLS "WHERE s.collection_id = ? ORDER BY s.id LIMIT ? OFFSET ?",
                          p, 3, subject_row, arr, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (rc) {
        json_decref(arr);
        return -1;
    }
    *results = arr;
    return 0;
}

int fvs_subject_delete(fvs_store *st, int64_t coll, int64_t id, char *err, size_t errlen) {
    fvs_val p[2] = {fvs_int(coll), fvs_int(id)};
    int64_t changes = 0;
    pthread_mutex_lock(&st->mu);
    int rc = begin(st, err, errlen);
    if (!rc)
        rc = fvs_db_query(st->db,
                          "INSERT INTO face_changes (collection_id, face_id, op) SELECT "
                          "collection_id, id, -1 FROM faces WHERE collection_id = ? AND "
                          "subject_id = ? ORDER BY id",
                          p, 2, NULL, NULL, NULL, err, errlen);
    if (!rc)
        rc = fvs_db_query(st->db, "DELETE FROM faces WHERE collection_id = ? AND subject_id = ?", p,
                          2, NULL, NULL, NULL, err, errlen);
    if (!rc)
        rc = fvs_db_query(st->db, "DELETE FROM subjects WHERE collection_id = ? AND id = ?", p, 2,
                          NULL, NULL, &changes, err, errlen);
    if (!rc && changes) rc = bump_version(st, coll, err, errlen);
    if (!rc) rc = commit(st, err, errlen);
    if (rc) rollback(st);
    if (!rc && changes) scrub_deleted(st);
    pthread_mutex_unlock(&st->mu);
    if (rc) return -1;
    return changes ? 0 : 1;
}

/* ------------------------------------------------------------ faces */

/* Row: id, subject_id, model, box_left, box_top, box_right, box_bottom,
 * score, image_sha256, created_at. */
/* A REAL column's value, or -1 for NULL (SQLite may hand back an INT). */
static double real_or_none(fvs_val v) {
    return v.type == FVS_REAL ? v.d : v.type == FVS_INT ? (double)v.i : -1;
}

static int face_row(void *ctx, const fvs_val *c, int n) {
    json_t *arr = ctx;
    if (n < 11) return 1;
    json_t *o = json_pack("{s:I, s:I, s:s, s:{s:f, s:f, s:f, s:f}, s:f, s:s?, s:o}", "id",
                          (json_int_t)c[0].i, "subject_id", (json_int_t)c[1].i, "model",
                          c[2].s ? c[2].s : "", "box", "left", c[3].d, "top", c[4].d, "right",
                          c[5].d, "bottom", c[6].d, "score", c[7].d, "image_sha256",
                          c[8].type == FVS_TEXT ? c[8].s : NULL, "created_at", iso_time(c[9].i));
    if (!o) return 1;
    double q = real_or_none(c[10]);
    json_object_set_new(o, "quality_score", q >= 0 ? json_real(q) : json_null());
    json_array_append_new(arr, o);
    return 0;
}

#define FACE_COLS                                                                                  \
    "SELECT id, subject_id, model, box_left, box_top, box_right, box_bottom, score, "              \
    "image_sha256, created_at, quality FROM faces "

static int subject_exists_locked(fvs_store *st, int64_t coll, int64_t subject, char *err,
                                 size_t errlen) {
    fvs_val p[2] = {fvs_int(coll), fvs_int(subject)};
    int64_t n = 0;
    if (query_int(st, "SELECT COUNT(*) FROM subjects WHERE collection_id = ? AND id = ?", p, 2, &n,
                  err, errlen))
        return -1;
    return n > 0 ? 0 : 1;
}

/* A process without the template key must not add a plaintext template
 * to a collection whose templates are sealed: the operator who set a key
 * expects every template of it encrypted, and a start-up line is easy to
 * miss.  -1 with a message starting with FVS_TKEY_ERROR (routes.c: 503
 * template_key_unavailable) when the collection holds a sealed template.
 * The scan stops at the first one; a fully plaintext collection is read
 * once per keyless enrolment, which the neural network's cost dwarfs.
 * st->mu held, inside the insert's transaction. */
static int refuse_plaintext_locked(fvs_store *st, int64_t coll, char *err, size_t errlen) {
    fvs_val p[1] = {fvs_int(coll)};
    int64_t sealed = 0;
    if (query_int(st,
                  "SELECT COUNT(*) FROM (SELECT 1 FROM faces WHERE collection_id = ? AND "
                  "length(embedding) <> 512 LIMIT 1) t",
                  p, 1, &sealed, err, errlen))
        return -1;
    if (sealed <= 0) return 0;
    snprintf(err, errlen,
             FVS_TKEY_ERROR "this collection's templates are encrypted and "
                            "FACEVERIFY_TEMPLATE_KEY is not set: a new template would be stored "
                            "in plaintext");
    return -1;
}

/* Inserts one face row inside the caller's transaction, sealed when a
 * key is set, and logs it for the search index.  0, 1 when there is no
 * such subject, -1 with a message.  st->mu held. */
static int insert_face_locked(fvs_store *st, int64_t coll, int64_t subject, const fvs_face_row *row,
                              int64_t *id, char *err, size_t errlen) {
    /* With a template key, the row holds only the sealed template. */
    unsigned char sealed[FVS_TEMPLATE_SEALED_BYTES];
    fvs_val blob = fvs_blob(row->embedding, FVS_TEMPLATE_PLAIN_BYTES);
    if (st->has_tkey) {
        fvs_template_seal(st->tkey, coll, subject, row->embedding, sealed);
        blob = fvs_blob(sealed, sizeof sealed);
    }
    fvs_val p[13] = {fvs_int(coll),
                     fvs_int(subject),
                     fvs_text(row->model),
                     blob,
                     fvs_real(row->left),
                     fvs_real(row->top),
                     fvs_real(row->right),
                     fvs_real(row->bottom),
                     fvs_real(row->score),
                     fvs_text(row->image_sha256),
                     fvs_int(row->created_at > 0 ? row->created_at : now_s()),
                     row->quality >= 0 ? fvs_real(row->quality) : fvs_null(),
                     fvs_text(row->import_fp)};
    int rc = subject_exists_locked(st, coll, subject, err, errlen);
    if (!rc)
        rc = query_int(st,
                       "INSERT INTO faces (collection_id, subject_id, model, embedding, box_left, "
                       "box_top, box_right, box_bottom, score, image_sha256, created_at, "
                       "quality, import_fp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                       "RETURNING id",
                       p, 13, id, err, errlen);
    if (!rc) rc = log_change(st, coll, *id, 1, err, errlen);
    return rc;
}

int fvs_faces_insert_many(fvs_store *st, int64_t coll, size_t n, const int64_t *subjects,
                          const fvs_face_row *rows, int64_t *ids, char *err, size_t errlen) {
    pthread_mutex_lock(&st->mu);
    int rc = begin(st, err, errlen);
    if (!rc && !st->has_tkey) rc = refuse_plaintext_locked(st, coll, err, errlen);
    for (size_t i = 0; !rc && i < n; i++)
        rc = insert_face_locked(st, coll, subjects[i], &rows[i], &ids[i], err, errlen);
    if (!rc && n) rc = bump_version(st, coll, err, errlen);
    if (!rc) rc = commit(st, err, errlen);
    if (rc) rollback(st);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fvs_face_insert(fvs_store *st, int64_t coll, int64_t subject, const fvs_face_row *row,
                    json_t **out, char *err, size_t errlen) {
    int64_t id = 0;
    pthread_mutex_lock(&st->mu);
    int rc = begin(st, err, errlen);
    if (!rc && !st->has_tkey) rc = refuse_plaintext_locked(st, coll, err, errlen);
    if (!rc) rc = insert_face_locked(st, coll, subject, row, &id, err, errlen);
    if (!rc) rc = bump_version(st, coll, err, errlen);
    if (!rc) rc = commit(st, err, errlen);
    if (rc) rollback(st);
    if (!rc) {
        json_t *arr = json_array();
        fvs_val q[2] = {fvs_int(coll), fvs_int(id)};
        rc = fvs_db_query(st->db, FACE_COLS "WHERE collection_id = ? AND id = ?", q, 2, face_row,
                          arr, NULL, err, errlen);
        if (!rc && json_array_size(arr) == 1)
            *out = json_incref(json_array_get(arr, 0));
        else
            rc = -1;
        json_decref(arr);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* The rows of one subject (sql takes collection_id and subject_id, in
 * that order) made into a JSON array by fn: 1 when there is no such
 * subject. */
static int subject_rows(fvs_store *st, int64_t coll, int64_t subject, const char *sql,
                        fvs_row_fn fn, json_t **out, char *err, size_t errlen) {
    fvs_val p[2] = {fvs_int(coll), fvs_int(subject)};
    json_t *arr = json_array();
    pthread_mutex_lock(&st->mu);
    int rc = subject_exists_locked(st, coll, subject, err, errlen);
    if (!rc) rc = fvs_db_query(st->db, sql, p, 2, fn, arr, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (rc) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int fvs_face_list(fvs_store *st, int64_t coll, int64_t subject, json_t **out, char *err,
                  size_t errlen) {
    return subject_rows(st, coll, subject,
                        FACE_COLS "WHERE collection_id = ? AND subject_id = ? ORDER BY id",
                        face_row, out, err, errlen);
}

int fvs_face_delete(fvs_store *st, int64_t coll, int64_t subject, int64_t face, char *err,
                    size_t errlen) {
    fvs_val p[3] = {fvs_int(coll), fvs_int(subject), fvs_int(face)};
    int64_t changes = 0;
    pthread_mutex_lock(&st->mu);
    int rc = begin(st, err, errlen);
    if (!rc)
        rc = fvs_db_query(st->db,
                          "DELETE FROM faces WHERE collection_id = ? AND subject_id = ? AND id = ?",
                          p, 3, NULL, NULL, &changes, err, errlen);
    if (!rc && changes) rc = log_change(st, coll, face, -1, err, errlen);
    if (!rc && changes) rc = bump_version(st, coll, err, errlen);
    if (!rc) rc = commit(st, err, errlen);
    if (rc) rollback(st);
    if (!rc && changes) scrub_deleted(st);
    pthread_mutex_unlock(&st->mu);
    if (rc) return -1;
    return changes ? 0 : 1;
}

/* ------------------------------------------------------------ bulk */

int fvs_store_has_template_key(const fvs_store *st) {
    return st->has_tkey;
}

int fvs_store_seal(const fvs_store *st, int64_t a, int64_t b, const float emb[FV_EMBED_DIM],
                   unsigned char *out) {
    if (!st->has_tkey) return -1;
    fvs_template_seal(st->tkey, a, b, emb, out);
    return 0;
}

int fvs_store_open_sealed(const fvs_store *st, int64_t a, int64_t b, const void *blob, size_t n,
                          float emb[FV_EMBED_DIM], char *err, size_t errlen) {
    return fvs_template_open(st->has_tkey ? st->tkey : NULL, a, b, blob, n, emb, err, errlen);
}

static int secret_row(void *ctx, const fvs_val *c, int n) {
    fvs_store *st = ctx;
    if (n < 1 || c[0].type != FVS_BLOB || c[0].n != sizeof st->fp_secret) return 1;
    memcpy(st->fp_secret, c[0].b, sizeof st->fp_secret);
    st->has_fp = 1;
    return 0;
}

/* Reads (making it first when missing: ON CONFLICT keeps the first of two
 * processes racing) the per-database fingerprint secret.  st->mu held. */
static int load_fp_secret_locked(fvs_store *st, char *err, size_t errlen) {
    if (st->has_fp) return 0;
    unsigned char fresh[sizeof st->fp_secret];
    randombytes_buf(fresh, sizeof fresh);
    fvs_val p[1] = {fvs_blob(fresh, sizeof fresh)};
    int rc = fvs_db_query(st->db,
                          "INSERT INTO store_secrets (name, value) VALUES ('import_fp', ?) ON "
                          "CONFLICT (name) DO NOTHING",
                          p, 1, NULL, NULL, NULL, err, errlen);
    sodium_memzero(fresh, sizeof fresh);
    if (!rc)
        rc = fvs_db_query(st->db, "SELECT value FROM store_secrets WHERE name = 'import_fp'", NULL,
                          0, secret_row, st, NULL, err, errlen);
    if (!rc && !st->has_fp) {
        snprintf(err, errlen, "store_secrets: the import fingerprint secret is malformed");
        rc = -1;
    }
    return rc;
}

int fvs_store_import_fp(fvs_store *st, const void *data, size_t len, char hex[65],
                        const char **column, char *err, size_t errlen) {
    if (st->has_tkey) {
        *column = "image_sha256";
        return fvs_store_image_mac(st, data, len, hex);
    }
    *column = "import_fp";
    pthread_mutex_lock(&st->mu);
    int rc = load_fp_secret_locked(st, err, errlen);
    unsigned char mac[32];
    if (!rc) {
        crypto_generichash(mac, sizeof mac, data, len, st->fp_secret, sizeof st->fp_secret);
        sodium_bin2hex(hex, 65, mac, sizeof mac);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fvs_face_fp_exists(fvs_store *st, int64_t coll, const char *hex, int *exists, char *err,
                       size_t errlen) {
    fvs_val p[3] = {fvs_int(coll), fvs_text(hex), fvs_text(hex)};
    int64_t n = 0;
    pthread_mutex_lock(&st->mu);
    int rc = query_int(st,
                       "SELECT COUNT(*) FROM faces WHERE collection_id = ? AND (image_sha256 = ? "
                       "OR import_fp = ?)",
                       p, 3, &n, err, errlen);
    pthread_mutex_unlock(&st->mu);
    *exists = n > 0;
    return rc;
}

int fvs_subject_find(fvs_store *st, int64_t coll, const char *name, int64_t *id, char *err,
                     size_t errlen) {
    fvs_val p[2] = {fvs_int(coll), fvs_text(name)};
    int64_t v = 0;
    pthread_mutex_lock(&st->mu);
    int rc = query_int(st, "SELECT id FROM subjects WHERE collection_id = ? AND name = ?", p, 2, &v,
                       err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (rc) return -1;
    if (v <= 0) return 1;
    *id = v;
    return 0;
}

typedef struct full_ctx {
    fvs_face_full_fn fn;
    void *ctx;
    const unsigned char *key;
    char err[200];
} full_ctx;

/* Row: id, subject_id, model, box_left, box_top, box_right, box_bottom,
 * score, image_sha256, created_at, quality, embedding, collection_id. */
static int full_row(void *ctx, const fvs_val *c, int n) {
    full_ctx *t = ctx;
    if (n < 13 || c[11].type != FVS_BLOB) return 1;
    float emb[FV_EMBED_DIM];
    int rc =
        fvs_template_open(t->key, c[12].i, c[1].i, c[11].b, c[11].n, emb, t->err, sizeof t->err);
    if (rc > 0) snprintf(t->err, sizeof t->err, "face %lld: malformed template", (long long)c[0].i);
    if (rc) return 1;
    fvs_face_full f = {c[0].i,
                       c[1].i,
                       c[9].i,
                       c[2].s ? c[2].s : "",
                       c[8].type == FVS_TEXT ? c[8].s : NULL,
                       (float)real_or_none(c[3]),
                       (float)real_or_none(c[4]),
                       (float)real_or_none(c[5]),
                       (float)real_or_none(c[6]),
                       (float)real_or_none(c[7]),
                       real_or_none(c[10]),
                       emb};
    if (t->fn(t->ctx, &f)) {
        if (!t->err[0]) snprintf(t->err, sizeof t->err, "export stopped");
        return 1;
    }
    return 0;
}

int fvs_faces_each(fvs_store *st, int64_t coll, fvs_face_full_fn fn, void *ctx, char *err,
                   size_t errlen) {
    full_ctx t = {fn, ctx, NULL, ""};
    fvs_val p[1] = {fvs_int(coll)};
    pthread_mutex_lock(&st->mu);
    t.key = st->has_tkey ? st->tkey : NULL;
    int rc = fvs_db_query(st->db,
                          "SELECT id, subject_id, model, box_left, box_top, box_right, box_bottom, "
                          "score, image_sha256, created_at, quality, embedding, collection_id "
                          "FROM faces WHERE collection_id = ? ORDER BY subject_id, id",
                          p, 1, full_row, &t, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (rc && t.err[0]) snprintf(err, errlen, "%s", t.err);
    return rc ? -1 : 0;
}

typedef struct tmpl_ctx {
    fvs_template_fn fn;
    void *ctx;
    const unsigned char *key;
    char err[200]; /* why a template could not be read */
} tmpl_ctx;

/* Row: id, subject_id, name, embedding, collection_id, quality; then
 * WHERE collection_id = ? AND model = ? and the caller's conditions. */
#define TEMPLATE_SELECT                                                                            \
    "SELECT f.id, f.subject_id, s.name, f.embedding, f.collection_id, f.quality FROM faces f "     \
    "JOIN subjects s ON s.id = f.subject_id WHERE f.collection_id = ? AND f.model = ? "

/* Row: id, subject_id, name, embedding, collection_id, quality. */
static int template_row(void *ctx, const fvs_val *c, int n) {
    tmpl_ctx *t = ctx;
    if (n < 6) return 1;
    if (c[3].type != FVS_BLOB) return 0;
    float emb[FV_EMBED_DIM];
    /* A stored blob of the wrong size is skipped, never read past; one
     * that does not decrypt is named to the caller (embedding NULL), which
     * serves the rest and says which could not be read. */
    int rc = fvs_template_open(t->key, c[4].i, c[1].i, c[3].b, c[3].n, emb, t->err, sizeof t->err);
    if (rc > 0) return 0;
    double q = c[5].type == FVS_REAL ? c[5].d : c[5].type == FVS_INT ? (double)c[5].i : -1;
    return t->fn(t->ctx, c[0].i, c[1].i, c[2].s ? c[2].s : "", rc < 0 ? NULL : emb, q);
}

int fvs_templates(fvs_store *st, int64_t coll, int64_t subject, const char *model,
                  fvs_template_fn fn, void *ctx, char *err, size_t errlen) {
    tmpl_ctx t = {fn, ctx, NULL, ""};
    fvs_val p[3] = {fvs_int(coll), fvs_text(model), fvs_int(subject)};
    if (errlen) err[0] = 0;
    pthread_mutex_lock(&st->mu);
    t.key = st->has_tkey ? st->tkey : NULL;
    int rc = fvs_db_query(st->db,
                          subject > 0 ? TEMPLATE_SELECT "AND f.subject_id = ? ORDER BY f.id"
                                      : TEMPLATE_SELECT "ORDER BY f.id",
                          p, subject > 0 ? 3 : 2, template_row, &t, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (!rc && t.err[0]) snprintf(err, errlen, "%s", t.err);
    return rc;
}

/* The tables that hold sealed templates: faces, and corrections (whose
 * place is (collection, -subject), correction_place).  Each query reads
 * id, collection_id, subject_id, embedding: plain, up to 256 plaintext
 * rows; batch, a collection's rows after an id, 256 at a time. */
typedef struct sealed_table {
    const char *plain, *batch, *update;
    int64_t sign; /* the place's subject is sign * subject_id */
    int indexed;  /* the search index holds its templates */
} sealed_table;
static const sealed_table SEALED_TABLES[] = {
    {"SELECT id, collection_id, subject_id, embedding FROM faces WHERE length(embedding) = 512 "
     "ORDER BY id LIMIT 256",
     "SELECT id, collection_id, subject_id, embedding FROM faces WHERE collection_id = ? AND id > "
     "? ORDER BY id LIMIT 256",
     "UPDATE faces SET embedding = ? WHERE id = ?", 1, 1},
    {"SELECT id, collection_id, subject_id, embedding FROM corrections WHERE length(embedding) = "
     "512 ORDER BY id LIMIT 256",
     "SELECT id, collection_id, subject_id, embedding FROM corrections WHERE collection_id = ? AND "
     "id > ? ORDER BY id LIMIT 256",
     "UPDATE corrections SET embedding = ? WHERE id = ?", -1, 0},
};
#define N_SEALED_TABLES (sizeof SEALED_TABLES / sizeof SEALED_TABLES[0])

/* One batch of plaintext rows read by encrypt_templates. */
typedef struct plain_batch {
    size_t n;
    int64_t id[256], coll[256], subject[256];
    float emb[256][FV_EMBED_DIM];
} plain_batch;

static int plain_row(void *ctx, const fvs_val *c, int n) {
    plain_batch *b = ctx;
    if (n < 4 || b->n == 256 || c[3].type != FVS_BLOB || c[3].n != FVS_TEMPLATE_PLAIN_BYTES)
        return 0;
    b->id[b->n] = c[0].i;
    b->coll[b->n] = c[1].i;
    b->subject[b->n] = c[2].i;
    memcpy(b->emb[b->n], c[3].b, FVS_TEMPLATE_PLAIN_BYTES);
    b->n++;
    return 0;
}

int fvs_store_encrypt_templates(fvs_store *st, int64_t *done, char *err, size_t errlen) {
    *done = 0;
    if (!st->has_tkey) {
        snprintf(err, errlen, "FACEVERIFY_TEMPLATE_KEY is not set");
        return -1;
    }
    plain_batch *b = malloc(sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    pthread_mutex_lock(&st->mu);
    for (size_t t = 0; !rc && t < N_SEALED_TABLES; t++) {
        const sealed_table *tb = &SEALED_TABLES[t];
        for (;;) { /* batches of 256 rows, each in its own transaction */
            b->n = 0;
            rc = begin(st, err, errlen);
            if (!rc) rc = fvs_db_query(st->db, tb->plain, NULL, 0, plain_row, b, NULL, err, errlen);
            for (size_t i = 0; !rc && i < b->n; i++) {
                unsigned char sealed[FVS_TEMPLATE_SEALED_BYTES];
                fvs_template_seal(st->tkey, b->coll[i], tb->sign * b->subject[i], b->emb[i],
                                  sealed);
                fvs_val p[2] = {fvs_blob(sealed, sizeof sealed), fvs_int(b->id[i])};
                rc = fvs_db_query(st->db, tb->update, p, 2, NULL, NULL, NULL, err, errlen);
                /* Every process reloads the collection on its next search,
                 * so one without the key stops serving it from memory at
                 * once (corrections are read per request anyway). */
                if (!rc && tb->indexed) rc = bump_version(st, b->coll[i], err, errlen);
            }
            if (!rc) rc = commit(st, err, errlen);
            if (rc) {
                rollback(st);
                break;
            }
            *done += (int64_t)b->n;
            if (b->n == 0) break;
        }
    }
    pthread_mutex_unlock(&st->mu);
    sodium_memzero(b, sizeof *b);
    free(b);
    return rc ? -1 : 0;
}

/* Unreadable templates found by fvs_store_unreadable, in id order. */
typedef struct bad_list {
    const unsigned char *key;
    fvs_bad_template *b;
    size_t n, cap;
    int oom;
    char why[200];
} bad_list;

/* Row: id, collection_id, subject_id, embedding. */
static int bad_row(void *ctx, const fvs_val *c, int n) {
    bad_list *l = ctx;
    if (n < 4 || c[3].type != FVS_BLOB) return 0;
    float emb[FV_EMBED_DIM];
    char why[200] = "";
    if (fvs_template_open(l->key, c[1].i, c[2].i, c[3].b, c[3].n, emb, why, sizeof why) >= 0) {
        sodium_memzero(emb, sizeof emb);
        return 0;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        fvs_bad_template *b = realloc(l->b, cap * sizeof *b);
        if (!b) {
            l->oom = 1;
            return 1;
        }
        l->b = b;
        l->cap = cap;
    }
    l->b[l->n++] = (fvs_bad_template){c[1].i, c[2].i, c[0].i};
    snprintf(l->why, sizeof l->why, "%s", why);
    return 0;
}

int fvs_store_unreadable(fvs_store *st, int64_t coll, int purge, fvs_bad_template **out, size_t *n,
                         char *why, size_t whylen, char *err, size_t errlen) {
    bad_list l = {NULL, NULL, 0, 0, 0, ""};
    fvs_val p[2] = {fvs_int(coll), fvs_int(coll)};
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&st->mu);
    l.key = st->has_tkey ? st->tkey : NULL;
    int rc =
        fvs_db_query(st->db,
                     "SELECT id, collection_id, subject_id, embedding FROM faces WHERE (? <= 0 "
                     "OR collection_id = ?) ORDER BY id",
                     p, 2, bad_row, &l, NULL, err, errlen);
    if (rc && l.oom) snprintf(err, errlen, "out of memory");
    /* One transaction per template: each delete is logged for the index
     * and moves its collection's version, as a DELETE through the API. */
    for (size_t i = 0; !rc && purge && i < l.n; i++) {
        const fvs_bad_template *b = &l.b[i];
        fvs_val q[2] = {fvs_int(b->coll), fvs_int(b->face)};
        int64_t changes = 0;
        rc = begin(st, err, errlen);
        if (!rc)
            rc = fvs_db_query(st->db, "DELETE FROM faces WHERE collection_id = ? AND id = ?", q, 2,
                              NULL, NULL, &changes, err, errlen);
        if (!rc && changes) rc = log_change(st, b->coll, b->face, -1, err, errlen);
        if (!rc && changes) rc = bump_version(st, b->coll, err, errlen);
        if (!rc) rc = commit(st, err, errlen);
        if (rc) rollback(st);
    }
    if (!rc && purge && l.n) scrub_deleted(st);
    pthread_mutex_unlock(&st->mu);
    if (rc) {
        free(l.b);
        return -1;
    }
    if (why && whylen) snprintf(why, whylen, "%s", l.why);
    *out = l.b;
    *n = l.n;
    return 0;
}

/* Row: one integer, appended to the JSON array ctx. */
static int id_list_row(void *ctx, const fvs_val *c, int n) {
    if (n < 1) return 1;
    return json_array_append_new(ctx, json_integer((json_int_t)c[0].i)) ? 1 : 0;
}

/* One batch of a collection's rows read by rekey_templates. */
typedef struct rekey_batch {
    const unsigned char *old_key, *new_key;
    int64_t sign; /* the table's (sealed_table) */
    size_t n;
    int64_t last_id, unreadable;
    int64_t id[256];
    unsigned char sealed[256][FVS_TEMPLATE_SEALED_BYTES];
} rekey_batch;

/* Row: id, collection_id, subject_id, embedding.  A row that opens with
 * the old key (or is plaintext) is sealed again with the new key into the
 * batch; one that opens with the new key already is left; one that opens
 * with neither is counted. */
static int rekey_row(void *ctx, const fvs_val *c, int n) {
    rekey_batch *b = ctx;
    if (n < 4) return 1;
    b->last_id = c[0].i;
    if (c[3].type != FVS_BLOB) return 0;
    float emb[FV_EMBED_DIM];
    char why[200];
    int64_t place = b->sign * c[2].i;
    int rc = fvs_template_open(b->old_key, c[1].i, place, c[3].b, c[3].n, emb, why, sizeof why);
    if (rc < 0 &&
        fvs_template_open(b->new_key, c[1].i, place, c[3].b, c[3].n, emb, why, sizeof why) < 0)
        b->unreadable++;
    if (rc == 0) {
        fvs_template_seal(b->new_key, c[1].i, place, emb, b->sealed[b->n]);
        b->id[b->n++] = c[0].i;
    }
    sodium_memzero(emb, sizeof emb);
    return 0;
}

int fvs_store_rekey_templates(fvs_store *st, const unsigned char *old_key, int64_t *done,
                              int64_t *unreadable, char *err, size_t errlen) {
    *done = *unreadable = 0;
    if (!st->has_tkey || !old_key) {
        snprintf(err, errlen, "both the old and the new template key are needed");
        return -1;
    }
    int64_t *colls = NULL;
    size_t ncoll = 0;
    rekey_batch *b = malloc(sizeof *b);
    pthread_mutex_lock(&st->mu);
    int rc = b ? 0 : -1;
    if (!b) snprintf(err, errlen, "out of memory");
    /* The collections, then one transaction each: a collection is either
     * all under the new key or all as it was. */
    json_t *ids = json_array();
    if (!rc)
        rc = fvs_db_query(st->db, "SELECT id FROM collections ORDER BY id", NULL, 0, id_list_row,
                          ids, NULL, err, errlen);
    ncoll = json_array_size(ids);
    colls = ncoll ? calloc(ncoll, sizeof *colls) : NULL;
    if (!rc && ncoll && !colls) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    for (size_t i = 0; !rc && i < ncoll; i++)
        colls[i] = (int64_t)json_integer_value(json_array_get(ids, i));
    json_decref(ids);
    for (size_t i = 0; !rc && i < ncoll; i++) {
        int64_t coll_done = 0, coll_bad = 0, faces_done = 0;
        rc = begin(st, err, errlen);
        b->old_key = old_key;
        b->new_key = st->tkey;
        for (size_t t = 0; !rc && t < N_SEALED_TABLES; t++) {
            const sealed_table *tb = &SEALED_TABLES[t];
            b->sign = tb->sign;
            b->last_id = 0;
            for (;;) {
                b->n = 0;
                b->unreadable = 0;
                int64_t before = b->last_id;
                fvs_val p[2] = {fvs_int(colls[i]), fvs_int(b->last_id)};
                if (!rc)
                    rc = fvs_db_query(st->db, tb->batch, p, 2, rekey_row, b, NULL, err, errlen);
                for (size_t k = 0; !rc && k < b->n; k++) {
                    fvs_val q[2] = {fvs_blob(b->sealed[k], FVS_TEMPLATE_SEALED_BYTES),
                                    fvs_int(b->id[k])};
                    rc = fvs_db_query(st->db, tb->update, q, 2, NULL, NULL, NULL, err, errlen);
                }
                coll_done += (int64_t)b->n;
                if (tb->indexed) faces_done += (int64_t)b->n;
                coll_bad += b->unreadable;
                if (rc || b->last_id == before) break;
            }
        }
        /* Every process reads the collection again on its next search. */
        if (!rc && faces_done) rc = bump_version(st, colls[i], err, errlen);
        if (!rc) rc = commit(st, err, errlen);
        if (rc) {
            rollback(st);
            break;
        }
        *done += coll_done;
        *unreadable += coll_bad;
    }
    pthread_mutex_unlock(&st->mu);
    if (b) sodium_memzero(b, sizeof *b);
    free(b);
    free(colls);
    return rc ? -1 : 0;
}

/* ------------------------------------------------------------ audit log */

int fvs_audit_write(fvs_store *st, const fvs_audit_entry *e, char *err, size_t errlen) {
    fvs_val p[10] = {fvs_int(now_s()),
                     e->collection_id > 0 ? fvs_int(e->collection_id) : fvs_null(),
                     fvs_text(e->key_prefix),
                     fvs_text(e->action),
                     e->subject_id > 0 ? fvs_int(e->subject_id) : fvs_null(),
                     e->face_id > 0 ? fvs_int(e->face_id) : fvs_null(),
                     fvs_text(e->request_id),
                     fvs_int(e->status),
                     fvs_text(e->outcome),
                     fvs_text(e->detail)};
    pthread_mutex_lock(&st->mu);
    int rc = fvs_db_query(st->db,
                          "INSERT INTO audit_log (at, collection_id, key_prefix, action, "
                          "subject_id, face_id, request_id, status, outcome, detail) VALUES "
                          "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                          p, 10, NULL, NULL, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* Row: id, at, collection_id, collection name, key_prefix, action,
 * subject_id, face_id, request_id, status, outcome, detail. */
static int audit_row(void *ctx, const fvs_val *c, int n) {
    json_t *arr = ctx;
    if (n < 12) return 1;
    json_t *detail = NULL;
    if (c[11].type == FVS_TEXT) detail = json_loads(c[11].s, 0, NULL);
#define OPT_INT(v) ((v).type == FVS_NULL ? json_null() : json_integer((json_int_t)(v).i))
#define OPT_STR(v) ((v).type == FVS_TEXT ? json_string((v).s) : json_null())
    json_t *o = json_pack("{s:I, s:o, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:o, s:o}", "id",
                          (json_int_t)c[0].i, "at", iso_time(c[1].i), "at_unix", (json_int_t)c[1].i,
                          "collection_id", OPT_INT(c[2]), "collection", OPT_STR(c[3]), "key_prefix",
                          OPT_STR(c[4]), "action", OPT_STR(c[5]), "subject_id", OPT_INT(c[6]),
                          "face_id", OPT_INT(c[7]), "status", (json_int_t)c[9].i, "outcome",
                          OPT_STR(c[10]), "detail", detail ? detail : json_object());
#undef OPT_INT
#undef OPT_STR
    if (!o) return 1;
    json_object_set_new(o, "request_id", c[8].type == FVS_TEXT ? json_string(c[8].s) : json_null());
    json_array_append_new(arr, o);
    return 0;
}

int fvs_audit_list(fvs_store *st, int64_t coll, const char *coll_name, int64_t limit,
                   int64_t before_id, json_t **results, char *err, size_t errlen) {
    json_t *arr = json_array();
    const char *name = coll_name ? coll_name : "";
    fvs_val p[6] = {fvs_int(coll),
                    fvs_int(coll),
                    fvs_text(name),
                    fvs_text(name),
                    fvs_int(before_id > 0 ? before_id : INT64_MAX),
                    fvs_int(limit)};
    pthread_mutex_lock(&st->mu);
    int rc = fvs_db_query(
        st->db,
        "SELECT a.id, a.at, a.collection_id, c.name, a.key_prefix, a.action, a.subject_id, "
        "a.face_id, a.request_id, a.status, a.outcome, a.detail FROM audit_log a LEFT JOIN "
        "collections c ON c.id = a.collection_id WHERE (? = 0 OR a.collection_id = ?) AND "
        "(? = '' OR c.name = ?) AND a.id < ? ORDER BY a.id DESC LIMIT ?",
        p, 6, audit_row, arr, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    if (rc) {
        json_decref(arr);
        return -1;
    }
    *results = arr;
    return 0;
}

/* ------------------------------------------------------------ index sync */

int fvs_template_get(fvs_store *st, int64_t coll, int64_t face, const char *model,
                     fvs_template_fn fn, void *ctx, char *err, size_t errlen) {
    tmpl_ctx t = {fn, ctx, NULL, ""};
    fvs_val p[3] = {fvs_int(coll), fvs_text(model), fvs_int(face)};
    if (errlen) err[0] = 0;
    pthread_mutex_lock(&st->mu);
    t.key = st->has_tkey ? st->tkey : NULL;
    int rc = fvs_db_query(st->db, TEMPLATE_SELECT "AND f.id = ?", p, 3, template_row, &t, NULL, err,
                          errlen);
    pthread_mutex_unlock(&st->mu);
    if (!rc && t.err[0]) snprintf(err, errlen, "%s", t.err);
    return rc;
}

typedef struct change_ctx {
    fvs_change_fn fn;
    void *ctx;
} change_ctx;

static int change_row(void *ctx, const fvs_val *c, int n) {
    change_ctx *k = ctx;
    if (n < 3) return 1;
    return k->fn(k->ctx, c[0].i, c[1].i, (int)c[2].i);
}

int fvs_face_changes(fvs_store *st, int64_t coll, int64_t after, fvs_change_fn fn, void *ctx,
                     char *err, size_t errlen) {
    change_ctx k = {fn, ctx};
    fvs_val p[2] = {fvs_int(coll), fvs_int(after)};
    pthread_mutex_lock(&st->mu);
    int rc = fvs_db_query(st->db,
                          "SELECT seq, face_id, op FROM face_changes WHERE collection_id = ? AND "
                          "seq > ? ORDER BY seq",
                          p, 2, change_row, &k, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* Keeps the newest `keep` rows of a collection's change log.  The newest
 * row dropped is kept as a marker (op 0): a reader whose position is
 * before it may have missed dropped rows and rebuilds from storage; a
 * reader past it missed nothing.  Safe to run on several nodes at once. */
int fvs_face_changes_prune(fvs_store *st, int64_t coll, int64_t keep, int64_t *pruned, char *err,
                           size_t errlen) {
    fvs_val p[2] = {fvs_int(coll), fvs_int(keep)};
    int64_t cut = -1;
    *pruned = 0;
    pthread_mutex_lock(&st->mu);
    int rc = query_int(st,
                       "SELECT seq FROM face_changes WHERE collection_id = ? ORDER BY seq DESC "
                       "LIMIT 1 OFFSET ?",
                       p, 2, &cut, err, errlen);
    if (!rc && cut > 0) {
        fvs_val q[2] = {fvs_int(coll), fvs_int(cut)};
        rc = begin(st, err, errlen);
        if (!rc)
            rc =
                fvs_db_query(st->db, "DELETE FROM face_changes WHERE collection_id = ? AND seq < ?",
                             q, 2, NULL, NULL, pruned, err, errlen);
        if (!rc)
            rc = fvs_db_query(st->db,
                              "UPDATE face_changes SET op = 0, face_id = 0 WHERE collection_id = ? "
                              "AND seq = ?",
                              q, 2, NULL, NULL, NULL, err, errlen);
        if (!rc) rc = commit(st, err, errlen);
        if (rc) rollback(st);
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

int fvs_change_seq(fvs_store *st, int64_t coll, int64_t *seq, char *err, size_t errlen) {
    fvs_val p[1] = {fvs_int(coll)};
    pthread_mutex_lock(&st->mu);
    int rc = query_int(st, "SELECT COALESCE(MAX(seq), 0) FROM face_changes WHERE collection_id = ?",
                       p, 1, seq, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

typedef struct idsum_ctx {
    fvs_id_fn fn;
    void *ctx;
} idsum_ctx;

static int id_row(void *ctx, const fvs_val *c, int n) {
    idsum_ctx *k = ctx;
    if (n < 8) return 1;
    fvs_collection coll;
    collection_from_row(&coll, c[0], c[1], c[2], c[3], c[4]);
    policy_from_row(&coll, c + 5);
    return k->fn(k->ctx, &coll);
}

int fvs_collection_each(fvs_store *st, fvs_id_fn fn, void *ctx, char *err, size_t errlen) {
    idsum_ctx k = {fn, ctx};
    pthread_mutex_lock(&st->mu);
    int rc = fvs_db_query(
        st->db,
        "SELECT id, name, threshold, model, index_backend, fmr, fpir, min_quality FROM "
        "collections ORDER BY id",
        NULL, 0, id_row, &k, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

typedef struct meta_ctx {
    fvs_meta_fn fn;
    void *ctx;
} meta_ctx;

static int meta_row(void *ctx, const fvs_val *c, int n) {
    meta_ctx *k = ctx;
    if (n < 3) return 1;
    return k->fn(k->ctx, c[0].i, c[1].i, c[2].s ? c[2].s : "");
}

int fvs_face_meta(fvs_store *st, int64_t coll, const char *model, fvs_meta_fn fn, void *ctx,
                  char *err, size_t errlen) {
    meta_ctx k = {fn, ctx};
    fvs_val p[2] = {fvs_int(coll), fvs_text(model)};
    pthread_mutex_lock(&st->mu);
    int rc =
        fvs_db_query(st->db,
                     "SELECT f.id, f.subject_id, s.name FROM faces f JOIN subjects s ON s.id = "
                     "f.subject_id WHERE f.collection_id = ? AND f.model = ? ORDER BY f.id",
                     p, 2, meta_row, &k, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* ------------------------------------------------------------ corrections */

/* A correction's template is sealed for the place (collection, -subject):
 * the minus keeps it from ever opening as a face template of the subject
 * (whose place is (collection, subject)), should a row be copied across
 * tables. */
static int64_t correction_place(int64_t subject) {
    return -subject;
}

int fvs_correction_insert(fvs_store *st, int64_t coll, int64_t subject,
                          const fvs_correction_row *row, int64_t *id, char *err, size_t errlen) {
    unsigned char sealed[FVS_TEMPLATE_SEALED_BYTES];
    fvs_val blob = fvs_blob(row->embedding, FVS_TEMPLATE_PLAIN_BYTES);
    if (st->has_tkey) {
        fvs_template_seal(st->tkey, coll, correction_place(subject), row->embedding, sealed);
        blob = fvs_blob(sealed, sizeof sealed);
    }
    fvs_val p[8] = {fvs_int(coll),
                    fvs_int(subject),
                    fvs_text(row->model),
                    blob,
                    fvs_text(row->source),
                    row->face_id > 0 ? fvs_int(row->face_id) : fvs_null(),
                    row->quality >= 0 ? fvs_real(row->quality) : fvs_null(),
                    fvs_int(now_s())};
    *id = 0;
    pthread_mutex_lock(&st->mu);
    int rc = begin(st, err, errlen);
    /* The same rule as for faces: no plaintext next to sealed templates. */
    if (!rc && !st->has_tkey) rc = refuse_plaintext_locked(st, coll, err, errlen);
    if (!rc) rc = subject_exists_locked(st, coll, subject, err, errlen);
    if (!rc)
        rc = query_int(st,
                       "INSERT INTO corrections (collection_id, subject_id, model, embedding, "
                       "source, face_id, quality, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                       "RETURNING id",
                       p, 8, id, err, errlen);
    if (!rc) rc = commit(st, err, errlen);
    if (rc) rollback(st);
    pthread_mutex_unlock(&st->mu);
    sodium_memzero(sealed, sizeof sealed);
    return rc;
}

/* Row: id, subject_id, model, source, face_id, quality, created_at. */
static int correction_row(void *ctx, const fvs_val *c, int n) {
    if (n < 7) return 1;
    json_t *o = json_pack(
        "{s:I, s:I, s:s, s:s, s:o, s:o, s:o}", "correction_id", (json_int_t)c[0].i, "subject_id",
        (json_int_t)c[1].i, "model", c[2].s ? c[2].s : "", "source", c[3].s ? c[3].s : "",
        "face_id", c[4].type == FVS_INT ? json_integer((json_int_t)c[4].i) : json_null(),
        "quality_score", real_or_none(c[5]) >= 0 ? json_real(real_or_none(c[5])) : json_null(),
        "created_at", iso_time(c[6].i));
    return o && json_array_append_new(ctx, o) == 0 ? 0 : 1;
}

int fvs_correction_list(fvs_store *st, int64_t coll, int64_t subject, json_t **out, char *err,
                        size_t errlen) {
    return subject_rows(st, coll, subject,
                        "SELECT id, subject_id, model, source, face_id, quality, created_at FROM "
                        "corrections WHERE collection_id = ? AND subject_id = ? ORDER BY id",
                        correction_row, out, err, errlen);
}

int fvs_correction_delete(fvs_store *st, int64_t coll, int64_t subject, int64_t id, char *err,
                          size_t errlen) {
    fvs_val p[3] = {fvs_int(coll), fvs_int(subject), fvs_int(id)};
    int64_t changes = 0;
    pthread_mutex_lock(&st->mu);
    int rc = fvs_db_query(
        st->db, "DELETE FROM corrections WHERE collection_id = ? AND subject_id = ? AND id = ?", p,
        3, NULL, NULL, &changes, err, errlen);
    /* The correction's template is gone from the database files too. */
    if (!rc && changes) scrub_deleted(st);
    pthread_mutex_unlock(&st->mu);
    if (rc) return -1;
    return changes ? 0 : 1;
}

typedef struct corr_ctx {
    fvs_correction_fn fn;
    void *ctx;
    const unsigned char *key;
    char err[200];
} corr_ctx;

/* Row: id, collection_id, subject_id, embedding. */
static int corr_row(void *ctx, const fvs_val *c, int n) {
    corr_ctx *t = ctx;
    if (n < 4 || c[3].type != FVS_BLOB) return 0;
    float emb[FV_EMBED_DIM];
    int rc = fvs_template_open(t->key, c[1].i, correction_place(c[2].i), c[3].b, c[3].n, emb,
                               t->err, sizeof t->err);
    if (rc > 0) return 0; /* not a template: skipped, never read past */
    rc = t->fn(t->ctx, c[0].i, c[2].i, rc < 0 ? NULL : emb);
    sodium_memzero(emb, sizeof emb);
    return rc;
}

int fvs_corrections_each(fvs_store *st, int64_t coll, const int64_t *subjects, size_t n,
                         const char *model, fvs_correction_fn fn, void *ctx, char *err,
                         size_t errlen) {
    corr_ctx t = {fn, ctx, NULL, ""};
    fvs_val p[2] = {fvs_int(coll), fvs_text(model)};
    if (errlen) err[0] = 0;
    if (n == 0) return 0;
    if (n > FVS_CORRECTION_SUBJECTS_MAX) {
        snprintf(err, errlen, "corrections: at most %d subjects at once",
                 FVS_CORRECTION_SUBJECTS_MAX);
        return -1;
    }
    /* The subject ids are the caller's integers, written as literals: an
     * IN list longer than the drivers' parameter lists (PostgreSQL's 32
     * here), and nothing a client sent is ever spliced into the text. */
    enum { HEAD_SQL = 160, PER_ID = 21 };
    char *sql = malloc(HEAD_SQL + n * PER_ID + 64);
    if (!sql) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t len = (size_t)snprintf(sql, HEAD_SQL,
                                  "SELECT id, collection_id, subject_id, embedding FROM "
                                  "corrections WHERE collection_id = ? AND model = ? AND "
                                  "subject_id IN (");
    for (size_t i = 0; i < n; i++)
        len +=
            (size_t)snprintf(sql + len, PER_ID + 1, "%s%lld", i ? "," : "", (long long)subjects[i]);
    snprintf(sql + len, 64, ") ORDER BY subject_id, id");
    pthread_mutex_lock(&st->mu);
    t.key = st->has_tkey ? st->tkey : NULL;
    int rc = fvs_db_query(st->db, sql, p, 2, corr_row, &t, NULL, err, errlen);
    pthread_mutex_unlock(&st->mu);
    free(sql);
    if (!rc && t.err[0]) snprintf(err, errlen, "%s", t.err);
    return rc;
}
