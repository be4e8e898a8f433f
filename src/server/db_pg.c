/*
 * db_pg.c: the PostgreSQL backend of db.h (libpq), for production and for
 * several faceverifyd processes sharing one database.
 *
 * Parameters go as text, except blobs, which go in binary format so that
 * embeddings need no escaping.  Results come back as text and are typed by
 * the column's type OID (int2/4/8 and bool -> integer, float4/8 and numeric
 * -> real, bytea -> blob via PQunescapeBytea, everything else -> text).
 * A dropped connection is reset once before the statement is retried.
 */
#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/db.h"

typedef struct pg_db {
    fvs_db base;
    PGconn *h;
} pg_db;

#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT2 21
#define OID_INT4 23
#define OID_FLOAT4 700
#define OID_FLOAT8 701
#define OID_NUMERIC 1700

static void pg_close(fvs_db *db) {
    pg_db *p = (pg_db *)db;
    PQfinish(p->h);
    free(p);
}

/* Rewrites '?' markers outside string literals into $1, $2, ... */
static char *rewrite_params(const char *sql) {
    size_t len = strlen(sql), cap = len * 4 + 1;
    char *out = malloc(cap);
    if (!out) return NULL;
    size_t o = 0;
    int n = 0, quoted = 0;
    for (const char *s = sql; *s; s++) {
        if (*s == '\'') quoted = !quoted;
        if (*s == '?' && !quoted) {
            o += (size_t)snprintf(out + o, cap - o, "$%d", ++n);
        } else {
            out[o++] = *s;
        }
    }
    out[o] = 0;
    return out;
}

static int ensure_connected(pg_db *p) {
    if (PQstatus(p->h) == CONNECTION_OK) return 0;
    PQreset(p->h);
    return PQstatus(p->h) == CONNECTION_OK ? 0 : -1;
}

static int pg_query(fvs_db *db, const char *sql, const fvs_val *params, int nparams, fvs_row_fn fn,
                    void *ctx, int64_t *changes, char *err, size_t errlen) {
    pg_db *p = (pg_db *)db;
    /* The protocol's limit; past 32 (a statement naming a chunk of face
     * ids, store.c) the parameter arrays live on the heap. */
    if (nparams < 0 || nparams > 65535) {
        snprintf(err, errlen, "too many parameters");
        return -1;
    }
    const char *values_s[32];
    int lengths_s[32], formats_s[32];
    char numbuf_s[32][40];
    const char **values = values_s;
    int *lengths = lengths_s, *formats = formats_s;
    char(*numbuf)[40] = numbuf_s;
    if (nparams > 32) {
        values = malloc((size_t)nparams * sizeof *values);
        lengths = malloc((size_t)nparams * sizeof *lengths);
        formats = malloc((size_t)nparams * sizeof *formats);
        numbuf = malloc((size_t)nparams * sizeof *numbuf);
    }
    char *q = values && lengths && formats && numbuf ? rewrite_params(sql) : NULL;
    if (!q) {
        if (nparams > 32) {
            free(values);
            free(lengths);
            free(formats);
            free(numbuf);
        }
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < nparams; i++) {
        const fvs_val *v = &params[i];
        lengths[i] = 0;
        formats[i] = 0;
        switch (v->type) {
        case FVS_NULL:
            values[i] = NULL;
            break;
        case FVS_INT:
            snprintf(numbuf[i], sizeof numbuf[i], "%" PRId64, v->i);
            values[i] = numbuf[i];
            break;
        case FVS_REAL:
            snprintf(numbuf[i], sizeof numbuf[i], "%.17g", v->d);
            values[i] = numbuf[i];
            break;
        case FVS_TEXT:
            values[i] = v->s;
            break;
        case FVS_BLOB:
            values[i] = v->b ? (const char *)v->b : "";
            lengths[i] = (int)v->n;
            formats[i] = 1;
            break;
        }
    }
    PGresult *res = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (ensure_connected(p)) break;
        res = PQexecParams(p->h, q, nparams, NULL, values, lengths, formats, 0);
        if (PQstatus(p->h) == CONNECTION_OK) break;
        PQclear(res);
        res = NULL;
    }
    free(q);
    if (nparams > 32) {
        free(values);
        free(lengths);
        free(formats);
        free(numbuf);
    }
    if (!res) {
        snprintf(err, errlen, "postgres: %s", PQerrorMessage(p->h));
        return -1;
    }
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "postgres: %s", PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    int rc = 0;
    if (fn && st == PGRES_TUPLES_OK) {
        int nrows = PQntuples(res), ncols = PQnfields(res);
        if (ncols > 32) ncols = 32;
        fvs_val cols[32];
        unsigned char *blobs[32];
        for (int r = 0; r < nrows && !rc; r++) {
            memset(blobs, 0, sizeof blobs);
            for (int c = 0; c < ncols; c++) {
                fvs_val *v = &cols[c];
                memset(v, 0, sizeof *v);
                if (PQgetisnull(res, r, c)) {
                    v->type = FVS_NULL;
                    continue;
                }
                const char *txt = PQgetvalue(res, r, c);
                switch (PQftype(res, c)) {
                case OID_BOOL:
                    v->type = FVS_INT;
                    v->i = txt[0] == 't';
                    break;
                case OID_INT2:
                case OID_INT4:
                case OID_INT8:
                    v->type = FVS_INT;
                    v->i = strtoll(txt, NULL, 10);
                    v->d = (double)v->i;
                    break;
                case OID_FLOAT4:
                case OID_FLOAT8:
                case OID_NUMERIC:
                    v->type = FVS_REAL;
                    v->d = strtod(txt, NULL);
                    v->i = (int64_t)v->d;
                    break;
                case OID_BYTEA: {
                    size_t n = 0;
                    blobs[c] = PQunescapeBytea((const unsigned char *)txt, &n);
                    v->type = FVS_BLOB;
                    v->b = blobs[c];
                    v->n = blobs[c] ? n : 0;
                    break;
                }
                default:
                    v->type = FVS_TEXT;
                    v->s = txt;
                    v->n = (size_t)PQgetlength(res, r, c);
                    break;
                }
            }
            if (fn(ctx, cols, ncols)) {
                snprintf(err, errlen, "row callback failed");
                rc = -1;
            }
            for (int c = 0; c < ncols; c++)
                if (blobs[c]) PQfreemem(blobs[c]);
        }
    }
    if (changes) {
        const char *t = PQcmdTuples(res);
        *changes = (t && *t) ? strtoll(t, NULL, 10) : 0;
    }
    PQclear(res);
    return rc;
}

static int pg_exec(fvs_db *db, const char *sql, char *err, size_t errlen) {
    pg_db *p = (pg_db *)db;
    if (ensure_connected(p)) {
        snprintf(err, errlen, "postgres: %s", PQerrorMessage(p->h));
        return -1;
    }
    PGresult *res = PQexec(p->h, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "postgres: %s", PQresultErrorMessage(res));
        PQclear(res);
        return -1;
    }
    PQclear(res);
    return 0;
}

static const struct fvs_db_ops pg_ops = {pg_close, pg_query, pg_exec};

/* Silences NOTICE messages (e.g. "relation already exists, skipping"). */
static void quiet_notice(void *arg, const char *msg) {
    (void)arg;
    (void)msg;
}

fvs_db *fvs_pg_open(const char *conninfo, char *err, size_t errlen) {
    pg_db *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->base.ops = &pg_ops;
    p->base.dialect = FVS_POSTGRES;
    p->h = PQconnectdb(conninfo);
    if (PQstatus(p->h) != CONNECTION_OK) {
        snprintf(err, errlen, "postgres: %s", PQerrorMessage(p->h));
        pg_close(&p->base);
        return NULL;
    }
    PQsetNoticeProcessor(p->h, quiet_notice, NULL);
    return &p->base;
}

/* ------------------------------------------------------------ LISTEN */

/* A listener is its own connection: LISTEN state belongs to a session, and
 * waiting on its socket must not hold the store's connection. */
struct fvs_listener {
    PGconn *h;
};

fvs_listener *fvs_pg_listen(const char *url, const char *channel, char *err, size_t errlen) {
    fvs_listener *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->h = PQconnectdb(url);
    if (PQstatus(l->h) != CONNECTION_OK) {
        snprintf(err, errlen, "postgres: %s", PQerrorMessage(l->h));
        fvs_listener_close(l);
        return NULL;
    }
    PQsetNoticeProcessor(l->h, quiet_notice, NULL);
    char *ident = PQescapeIdentifier(l->h, channel, strlen(channel));
    char sql[256];
    snprintf(sql, sizeof sql, "LISTEN %s", ident ? ident : "\"\"");
    PQfreemem(ident);
    PGresult *r = PQexec(l->h, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) snprintf(err, errlen, "postgres: %s", PQerrorMessage(l->h));
    PQclear(r);
    if (!ok) {
        fvs_listener_close(l);
        return NULL;
    }
    return l;
}

int fvs_listener_wait(fvs_listener *l, int timeout_ms, fvs_notify_fn fn, void *ctx) {
    int fd = PQsocket(l->h);
    if (fd < 0) return -1;
    struct pollfd pfd = {fd, POLLIN, 0};
    int n = poll(&pfd, 1, timeout_ms);
    if (n < 0) return errno == EINTR ? 0 : -1;
    if (n > 0 && !PQconsumeInput(l->h)) return -1;
    PGnotify *note;
    while ((note = PQnotifies(l->h)) != NULL) {
        fn(ctx, note->extra ? note->extra : "");
        PQfreemem(note);
    }
    return PQstatus(l->h) == CONNECTION_OK ? 0 : -1;
}

void fvs_listener_close(fvs_listener *l) {
    if (!l) return;
    PQfinish(l->h);
    free(l);
}
