/*
 * db.h: the one small interface between faceverifyd and its SQL database.
 *
 * Two backends implement it: SQLite (db_sqlite.c, the default, a file under
 * var/) and PostgreSQL (db_pg.c, libpq, for production and for several
 * faceverifyd processes sharing one database).  Everything above this layer
 * (store.c) is written once, in the SQL both dialects share: '?' parameter
 * markers (rewritten to $1.. for PostgreSQL), INSERT .. RETURNING id, and
 * integers/reals/text/blobs only.  Only the migrations differ per dialect.
 *
 * A connection is not shared between threads without the caller's lock:
 * store.c serialises access with one mutex per process, which is plenty for
 * a service whose requests spend their time in the neural network.
 */
#ifndef FVS_DB_H
#define FVS_DB_H

#include <stddef.h>
#include <stdint.h>

typedef enum fvs_type { FVS_NULL, FVS_INT, FVS_REAL, FVS_TEXT, FVS_BLOB } fvs_type;

/* One parameter or result value.  For results, s/b point into the backend's
 * row buffer and are valid only during the row callback. */
typedef struct fvs_val {
    fvs_type type;
    int64_t i;
    double d;
    const char *s;
    const void *b;
    size_t n; /* blob length */
} fvs_val;

typedef enum fvs_dialect { FVS_SQLITE, FVS_POSTGRES } fvs_dialect;

typedef struct fvs_db fvs_db;

/* Called once per result row; return nonzero to stop with an error. */
typedef int (*fvs_row_fn)(void *ctx, const fvs_val *cols, int ncols);

/* Opens "sqlite:///abs/path", "sqlite://relative/path", "postgres://..." or
 * "postgresql://...".  Returns NULL with a message in err on failure. */
fvs_db *fvs_db_open(const char *url, char *err, size_t errlen);
void fvs_db_close(fvs_db *db);
fvs_dialect fvs_db_dialect(const fvs_db *db);

/* Runs one statement with '?' parameters; calls fn (may be NULL) per row.
 * Returns 0 on success, -1 with a message in err on failure.  *changes (may
 * be NULL) receives the number of rows a DML statement touched. */
int fvs_db_query(fvs_db *db, const char *sql, const fvs_val *params, int nparams, fvs_row_fn fn,
                 void *ctx, int64_t *changes, char *err, size_t errlen);

/* Runs one or more parameterless statements (migrations, BEGIN/COMMIT). */
int fvs_db_exec(fvs_db *db, const char *sql, char *err, size_t errlen);

/* Value constructors for parameter lists. */
static inline fvs_val fvs_int(int64_t i) {
    fvs_val v = {FVS_INT, i, 0, 0, 0, 0};
    return v;
}
static inline fvs_val fvs_real(double d) {
    fvs_val v = {FVS_REAL, 0, d, 0, 0, 0};
    return v;
}
static inline fvs_val fvs_text(const char *s) {
    fvs_val v = {s ? FVS_TEXT : FVS_NULL, 0, 0, s, 0, 0};
    return v;
}
static inline fvs_val fvs_blob(const void *b, size_t n) {
    fvs_val v = {FVS_BLOB, 0, 0, 0, b, n};
    return v;
}
static inline fvs_val fvs_null(void) {
    fvs_val v = {FVS_NULL, 0, 0, 0, 0, 0};
    return v;
}

/* Backend entry points used by fvs_db_open. */
struct fvs_db_ops {
    void (*close)(fvs_db *db);
    int (*query)(fvs_db *db, const char *sql, const fvs_val *params, int nparams, fvs_row_fn fn,
                 void *ctx, int64_t *changes, char *err, size_t errlen);
    int (*exec)(fvs_db *db, const char *sql, char *err, size_t errlen);
};

struct fvs_db {
    const struct fvs_db_ops *ops;
    fvs_dialect dialect;
};

/* PostgreSQL LISTEN on its own connection (index.c's sync thread).
 * fvs_listener_wait waits up to timeout_ms and calls fn with the payload of
 * each notification received; -1 when the connection is lost (close and
 * listen again). */
typedef struct fvs_listener fvs_listener;
typedef void (*fvs_notify_fn)(void *ctx, const char *payload);
fvs_listener *fvs_pg_listen(const char *url, const char *channel, char *err, size_t errlen);
int fvs_listener_wait(fvs_listener *l, int timeout_ms, fvs_notify_fn fn, void *ctx);
void fvs_listener_close(fvs_listener *l);

fvs_db *fvs_sqlite_open(const char *path, char *err, size_t errlen);
fvs_db *fvs_pg_open(const char *conninfo, char *err, size_t errlen);

#endif
