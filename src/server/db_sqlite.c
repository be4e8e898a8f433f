/*
 * db_sqlite.c: the SQLite backend of db.h (the default database).
 *
 * One connection per process, in WAL mode with a busy timeout so that a
 * second faceverifyd (or the createcollection command) on the same file
 * waits for the writer instead of failing.  Statements are prepared per
 * call: the server's cost is in the network, not in SQL parsing.
 */
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/db.h"

typedef struct sqlite_db {
    fvs_db base;
    sqlite3 *h;
} sqlite_db;

static void set_err(char *err, size_t errlen, const char *what, sqlite3 *h) {
    if (err && errlen) snprintf(err, errlen, "sqlite: %s: %s", what, h ? sqlite3_errmsg(h) : "");
}

static void sq_close(fvs_db *db) {
    sqlite_db *s = (sqlite_db *)db;
    sqlite3_close(s->h);
    free(s);
}

/* Binds params (1-based in SQLite) and steps through the rows. */
static int sq_query(fvs_db *db, const char *sql, const fvs_val *params, int nparams, fvs_row_fn fn,
                    void *ctx, int64_t *changes, char *err, size_t errlen) {
    sqlite_db *s = (sqlite_db *)db;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->h, sql, -1, &st, NULL) != SQLITE_OK) {
        set_err(err, errlen, "prepare", s->h);
        return -1;
    }
    for (int i = 0; i < nparams; i++) {
        const fvs_val *p = &params[i];
        int rc = SQLITE_OK;
        switch (p->type) {
        case FVS_NULL:
            rc = sqlite3_bind_null(st, i + 1);
            break;
        case FVS_INT:
            rc = sqlite3_bind_int64(st, i + 1, p->i);
            break;
        case FVS_REAL:
            rc = sqlite3_bind_double(st, i + 1, p->d);
            break;
        case FVS_TEXT:
            rc = sqlite3_bind_text(st, i + 1, p->s, -1, SQLITE_TRANSIENT);
            break;
        case FVS_BLOB:
            rc = sqlite3_bind_blob64(st, i + 1, p->b, (sqlite3_uint64)p->n, SQLITE_TRANSIENT);
            break;
        }
        if (rc != SQLITE_OK) {
            set_err(err, errlen, "bind", s->h);
            sqlite3_finalize(st);
            return -1;
        }
    }
    int ncols = sqlite3_column_count(st);
    fvs_val cols[32];
    if (ncols > 32) ncols = 32;
    for (;;) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) break;
        if (rc != SQLITE_ROW) {
            set_err(err, errlen, "step", s->h);
            sqlite3_finalize(st);
            return -1;
        }
        for (int c = 0; c < ncols; c++) {
            fvs_val *v = &cols[c];
            memset(v, 0, sizeof *v);
            switch (sqlite3_column_type(st, c)) {
            case SQLITE_INTEGER:
                v->type = FVS_INT;
                v->i = sqlite3_column_int64(st, c);
                v->d = (double)v->i;
                break;
            case SQLITE_FLOAT:
                v->type = FVS_REAL;
                v->d = sqlite3_column_double(st, c);
                v->i = (int64_t)v->d;
                break;
            case SQLITE_TEXT:
                v->type = FVS_TEXT;
                v->s = (const char *)sqlite3_column_text(st, c);
                v->n = (size_t)sqlite3_column_bytes(st, c);
                break;
            case SQLITE_BLOB:
                v->type = FVS_BLOB;
                v->b = sqlite3_column_blob(st, c);
                v->n = (size_t)sqlite3_column_bytes(st, c);
                break;
            default:
                v->type = FVS_NULL;
                break;
            }
        }
        if (fn && fn(ctx, cols, ncols)) {
            if (err && errlen) snprintf(err, errlen, "row callback failed");
            sqlite3_finalize(st);
            return -1;
        }
    }
    if (changes) *changes = sqlite3_changes(s->h);
    sqlite3_finalize(st);
    return 0;
}

static int sq_exec(fvs_db *db, const char *sql, char *err, size_t errlen) {
    sqlite_db *s = (sqlite_db *)db;
    char *msg = NULL;
    if (sqlite3_exec(s->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
        if (err && errlen) snprintf(err, errlen, "sqlite: %s", msg ? msg : "exec failed");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static const struct fvs_db_ops sqlite_ops = {sq_close, sq_query, sq_exec};

fvs_db *fvs_sqlite_open(const char *path, char *err, size_t errlen) {
    sqlite_db *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->base.ops = &sqlite_ops;
    s->base.dialect = FVS_SQLITE;
    /* A new database file is made 0600 here, whichever command opens it
     * first, not with SQLite's 0644 (less the umask): it holds templates
     * and key hashes.  SQLite gives its -wal and -shm files the main
     * file's mode. */
    if (path[0] && strcmp(path, ":memory:") != 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0) close(fd);
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
    if (sqlite3_open_v2(path, &s->h, flags, NULL) != SQLITE_OK) {
        set_err(err, errlen, path, s->h);
        sqlite3_close(s->h);
        free(s);
        return NULL;
    }
    sqlite3_busy_timeout(s->h, 10000);
    /* secure_delete: deleted and overwritten rows (templates of a deleted
     * subject, plaintext replaced by encrypttemplates) are zeroed in the
     * file, not left in free pages. */
    if (sq_exec(&s->base,
                "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON;", err,
                errlen)) {
        sq_close(&s->base);
        return NULL;
    }
    return &s->base;
}
