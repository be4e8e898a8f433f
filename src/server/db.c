/*
 * db.c: picks the backend from the database URL and forwards calls.
 */
#include <stdio.h>
#include <string.h>

#include "server/db.h"

fvs_db *fvs_db_open(const char *url, char *err, size_t errlen) {
    if (!url || !*url) {
        snprintf(err, errlen, "empty database URL");
        return NULL;
    }
    if (strncmp(url, "sqlite://", 9) == 0) {
        /* sqlite:///abs/path keeps the leading '/', sqlite://rel/path is
         * relative to the working directory. */
        return fvs_sqlite_open(url + 9, err, errlen);
    }
    if (strncmp(url, "postgres://", 11) == 0 || strncmp(url, "postgresql://", 13) == 0)
        return fvs_pg_open(url, err, errlen);
    snprintf(err, errlen, "unsupported database URL (use sqlite:///path or postgres://...): %s",
             url);
    return NULL;
}

void fvs_db_close(fvs_db *db) {
    if (db) db->ops->close(db);
}

fvs_dialect fvs_db_dialect(const fvs_db *db) {
    return db->dialect;
}

int fvs_db_query(fvs_db *db, const char *sql, const fvs_val *params, int nparams, fvs_row_fn fn,
                 void *ctx, int64_t *changes, char *err, size_t errlen) {
    return db->ops->query(db, sql, params, nparams, fn, ctx, changes, err, errlen);
}

int fvs_db_exec(fvs_db *db, const char *sql, char *err, size_t errlen) {
    return db->ops->exec(db, sql, err, errlen);
}
