/*
 * search.c: the backends of search.h.
 *
 * All backends share an open-addressing id table (id -> row) that answers
 * contains/remove in O(1) and keeps an order-independent checksum of the
 * live ids.  The exact backends keep rows contiguous (a remove moves the
 * last row into the hole) so a query is one sgemv (float32) or one int8
 * scan, then a bounded selection and an exact re-rank.  The FAISS
 * backends delegate to faiss_wrap and keep a tombstone table for deletes.
 */
#include "search/search.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "faceverify.h"
#include "search/faiss_wrap.h"
#include "core/fvi.h"
#include "search/kernels.h"
#include "core/workers.h"

#define DIM FV_EMBED_DIM
#define EMPTY INT64_MIN
#define GONE (INT64_MIN + 1)

/* ------------------------------------------------------------ id table */

typedef struct idtab {
    int64_t *keys;
    size_t *rows;
    size_t cap, used, live; /* used counts GONE slots too */
} idtab;

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

uint64_t fvsearch_id_hash(int64_t id) {
    return mix((uint64_t)id ^ 0x9e3779b97f4a7c15ULL);
}

static void idtab_free(idtab *t) {
    fvi_free(t->keys);
    fvi_free(t->rows);
    memset(t, 0, sizeof *t);
}

/* Slot of id, or of the first free slot where it would go. */
static size_t idtab_slot(const idtab *t, int64_t id, int *found) {
    size_t mask = t->cap - 1, i = (size_t)mix((uint64_t)id) & mask, tomb = SIZE_MAX;
    *found = 0;
    for (;;) {
        int64_t k = t->keys[i];
        if (k == id) {
            *found = 1;
            return i;
        }
        if (k == EMPTY) return tomb != SIZE_MAX ? tomb : i;
        if (k == GONE && tomb == SIZE_MAX) tomb = i;
        i = (i + 1) & mask;
    }
}

static int idtab_rehash(idtab *t, size_t cap) {
    idtab n = {0};
    n.keys = fvi_malloc(cap * sizeof *n.keys);
    n.rows = fvi_malloc(cap * sizeof *n.rows);
    if (!n.keys || !n.rows) {
        idtab_free(&n);
        return -1;
    }
    n.cap = cap;
    for (size_t i = 0; i < cap; i++) n.keys[i] = EMPTY;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->keys[i] == EMPTY || t->keys[i] == GONE) continue;
        int f;
        size_t s = idtab_slot(&n, t->keys[i], &f);
        n.keys[s] = t->keys[i];
        n.rows[s] = t->rows[i];
        n.used++;
        n.live++;
    }
    idtab_free(t);
    *t = n;
    return 0;
}

/* Room for extra more ids (load factor <= 1/2). */
static int idtab_reserve(idtab *t, size_t extra) {
    if (extra > SIZE_MAX / 4 - t->used) return -1;
    size_t need = (t->used + extra) * 2;
    if (t->cap >= need && t->cap) return 0;
    size_t cap = 64;
    while (cap < (t->live + extra) * 2 + 64) cap *= 2;
    return idtab_rehash(t, cap);
}

static size_t *idtab_get(const idtab *t, int64_t id) {
    if (!t->cap) return NULL;
    int f;
    size_t s = idtab_slot(t, id, &f);
    return f ? &t->rows[s] : NULL;
}

/* Caller reserved room and checked id is absent. */
static void idtab_put(idtab *t, int64_t id, size_t row) {
    int f;
    size_t s = idtab_slot(t, id, &f);
    if (t->keys[s] == EMPTY) t->used++;
    t->keys[s] = id;
    t->rows[s] = row;
    t->live++;
}

static int idtab_del(idtab *t, int64_t id) {
    if (!t->cap) return 1;
    int f;
    size_t s = idtab_slot(t, id, &f);
    if (!f) return 1;
    t->keys[s] = GONE;
    t->live--;
    return 0;
}

/* ------------------------------------------------------------ the index */

/* What exact-int8 keeps per row next to its code: enough to bound the
 * error of the int8 distance (see the scan). */
typedef struct rowinfo {
    float scale; /* code * scale ~ x */
    float norm;  /* |x|^2 */
    float err;   /* |x - code * scale|, rounded up */
    float lpe;   /* |x| + err, rounded up */
} rowinfo;

struct fvsearch {
    fvsearch_kind kind;
    idtab ids; /* live ids -> row (exact backends) */
    uint64_t checksum;
    /* exact, exact-int8: rows 0..n-1 */
    size_t n, cap;
    float *rows;  /* float32 rows: exact; exact-int8 unless spilled */
    float *norms; /* exact: |x|^2 */
    int64_t *rowid;
    int8_t *codes;     /* exact-int8 */
    rowinfo *info;     /* exact-int8 */
    int spill;         /* exact-int8: fd of the file holding the float32 rows, or -1 */
    int threads;       /* scan threads wanted */
    fvi_workers *pool; /* created once the index is big enough to split */
    /* faiss */
    fvsearch_faiss *f;
    idtab tomb;
    size_t stale; /* superseded copies of re-added ids still in f */
};

/* Galleries smaller than this are scanned by the calling thread alone:
 * below it waking a worker costs more than it saves. */
#define SPLIT_MIN 32768
/* Rows per block of the scan (one sgemv or one int8 kernel call). */
#define BLOCK 2048

static const char *const NAMES[FVSEARCH_KINDS] = {"exact", "exact-int8", "faiss-flat", "faiss-hnsw",
                                                  "faiss-ivfpq"};

int fvsearch_kind_parse(const char *name, fvsearch_kind *out) {
    for (int k = 0; k < FVSEARCH_KINDS; k++)
        if (name && strcmp(name, NAMES[k]) == 0) {
            *out = (fvsearch_kind)k;
            return 0;
        }
    return -1;
}

const char *fvsearch_kind_name(fvsearch_kind kind) {
    return (unsigned)kind < FVSEARCH_KINDS ? NAMES[kind] : "?";
}

static int is_faiss(fvsearch_kind k) {
    return k >= FVSEARCH_FAISS_FLAT;
}

static int faiss_kind(fvsearch_kind k) {
    return k == FVSEARCH_FAISS_HNSW    ? FVSEARCH_FAISS_INDEX_HNSW
           : k == FVSEARCH_FAISS_IVFPQ ? FVSEARCH_FAISS_INDEX_IVFPQ
                                       : FVSEARCH_FAISS_INDEX_FLAT;
}

fvsearch *fvsearch_create(fvsearch_kind kind, char *err, size_t errlen) {
    if ((unsigned)kind >= FVSEARCH_KINDS) {
        snprintf(err, errlen, "unknown search backend");
        return NULL;
    }
    if (is_faiss(kind) && fvsearch_faiss_available(err, errlen)) return NULL;
    fvsearch *s = fvi_calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->kind = kind;
    s->spill = -1;
    s->threads = 1;
    return s;
}

void fvsearch_destroy(fvsearch *s) {
    if (!s) return;
    idtab_free(&s->ids);
    idtab_free(&s->tomb);
    fvi_free(s->rows);
    fvi_free(s->norms);
    fvi_free(s->rowid);
    fvi_free(s->codes);
    fvi_free(s->info);
    if (s->spill >= 0) close(s->spill);
    fvi_workers_destroy(s->pool);
    fvsearch_faiss_destroy(s->f);
    fvi_free(s);
}

fvsearch_kind fvsearch_kind_of(const fvsearch *s) {
    return s->kind;
}

size_t fvsearch_count(const fvsearch *s) {
    return s->ids.live;
}

uint64_t fvsearch_checksum(const fvsearch *s) {
    return s->checksum;
}

int fvsearch_contains(const fvsearch *s, int64_t id) {
    return idtab_get(&s->ids, id) != NULL;
}

size_t fvsearch_memory(const fvsearch *s) {
    size_t b = s->ids.cap * (sizeof(int64_t) + sizeof(size_t)) +
               s->tomb.cap * (sizeof(int64_t) + sizeof(size_t));
    if (s->f) return b + fvsearch_faiss_memory(s->f);
    b += s->cap * sizeof(int64_t);
    if (s->rows) b += s->cap * DIM * sizeof(float);
    if (s->norms) b += s->cap * sizeof(float);
    if (s->kind == FVSEARCH_INT8) b += s->cap * (DIM + sizeof(rowinfo));
    return b;
}

/* Makes room for the scan threads once the index is big enough; a pool
 * that cannot be created leaves the scan single-threaded. */
static void maybe_pool(fvsearch *s) {
    if (!s->pool && s->threads > 1 && s->n >= SPLIT_MIN && !is_faiss(s->kind))
        s->pool = fvi_workers_create(s->threads);
}

void fvsearch_set_threads(fvsearch *s, int threads) {
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    if (threads != s->threads) {
        fvi_workers_destroy(s->pool);
        s->pool = NULL;
    }
    s->threads = threads;
    maybe_pool(s);
}

/* ------------------------------------------------------------ exact rows */

static int grow_rows(fvsearch *s, size_t need) {
    if (need <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / (DIM * sizeof(float))) return -1;
        cap *= 2;
    }
    if (s->kind == FVSEARCH_EXACT || s->spill < 0) {
        float *rows = fvi_realloc(s->rows, cap * DIM * sizeof(float));
        if (!rows) return -1;
        s->rows = rows;
    }
    if (s->kind == FVSEARCH_EXACT) {
        float *norms = fvi_realloc(s->norms, cap * sizeof(float));
        if (!norms) return -1;
        s->norms = norms;
    }
    int64_t *rowid = fvi_realloc(s->rowid, cap * sizeof(int64_t));
    if (!rowid) return -1;
    s->rowid = rowid;
    if (s->kind == FVSEARCH_INT8) {
        int8_t *codes = fvi_realloc(s->codes, cap * DIM);
        if (!codes) return -1;
        s->codes = codes;
        rowinfo *info = fvi_realloc(s->info, cap * sizeof(rowinfo));
        if (!info) return -1;
        s->info = info;
    }
    s->cap = cap;
    return 0;
}

/* Symmetric per-vector int8 quantisation: code = round(x / scale), scale =
 * max |x| / 127 (0 for the zero vector); codes lie in [-127, 127]. */
static float quantise(const float *x, int8_t *code) {
    float m = 0;
    for (int i = 0; i < DIM; i++) m = fmaxf(m, fabsf(x[i]));
    float scale = m / 127.0f, inv = m > 0 ? 127.0f / m : 0;
    for (int i = 0; i < DIM; i++) {
        long c = lrintf(x[i] * inv);
        code[i] = (int8_t)(c > 127 ? 127 : c < -127 ? -127 : c);
    }
    return scale;
}

/* |x - scale * code| in double. */
static double quant_error(const float *x, float scale, const int8_t *code) {
    double e = 0;
    for (int i = 0; i < DIM; i++) {
        double r = (double)x[i] - (double)scale * code[i];
        e += r * r;
    }
    return sqrt(e);
}

static void put_row(fvsearch *s, size_t r, int64_t id, const float *v) {
    s->rowid[r] = id;
    if (s->rows) memcpy(s->rows + r * DIM, v, DIM * sizeof(float));
    if (s->kind == FVSEARCH_EXACT) {
        float nn = 0;
        for (int i = 0; i < DIM; i++) nn += v[i] * v[i];
        s->norms[r] = nn;
        return;
    }
    rowinfo *ri = &s->info[r];
    int8_t *code = s->codes + r * DIM;
    double nn = 0;
    for (int i = 0; i < DIM; i++) nn += (double)v[i] * v[i];
    ri->scale = quantise(v, code);
    double e = quant_error(v, ri->scale, code);
    ri->norm = (float)nn;
    ri->err = nextafterf((float)e, INFINITY);
    ri->lpe = nextafterf((float)(sqrt(nn) + e), INFINITY);
}

/* ------------------------------------------------------------ spill file */

/* The float32 rows of a spilled exact-int8 index live in an unlinked file:
 * row r at offset r * ROWBYTES.  Reads and writes loop over short counts. */
#define ROWBYTES (DIM * sizeof(float))

static int spill_io(int fd, int write, void *buf, size_t len, size_t off) {
    char *p = buf;
    while (len) {
        if (off > (size_t)INT64_MAX) return -1;
        ssize_t got = write ? pwrite(fd, p, len, (off_t)off) : pread(fd, p, len, (off_t)off);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        p += got;
        off += (size_t)got;
        len -= (size_t)got;
    }
    return 0;
}

/* Row r's float32 vector into out (from memory or the spill file). */
static int get_row(const fvsearch *s, size_t r, float *out) {
    if (s->rows) {
        memcpy(out, s->rows + r * DIM, ROWBYTES);
        return 0;
    }
    return spill_io(s->spill, 0, out, ROWBYTES, r * ROWBYTES);
}

int fvsearch_spill(fvsearch *s, const char *dir, char *err, size_t errlen) {
    if (s->kind != FVSEARCH_INT8 || s->spill >= 0) return 0;
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/fv-rows-XXXXXX", dir) >= sizeof path) {
        snprintf(err, errlen, "spill directory name too long");
        return -1;
    }
    int fd = mkstemp(path);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a file in %s: %s", dir, strerror(errno));
        return -1;
    }
    unlink(path); /* lives as long as the descriptor, even after a crash */
    if (s->n && spill_io(fd, 1, s->rows, s->n * ROWBYTES, 0)) {
        snprintf(err, errlen, "cannot write the spill file in %s: %s", dir, strerror(errno));
        close(fd);
        return -1;
    }
    s->spill = fd;
    fvi_free(s->rows);
    s->rows = NULL;
    return 0;
}

/* ------------------------------------------------------------ faiss */

/* (Re)builds s->f from n vectors: IVFPQ trains on them when there are
 * enough, else the index is flat until a later compaction. */
static int faiss_build(fvsearch *s, size_t n, const int64_t *ids, const float *vecs, char *err,
                       size_t errlen) {
    int fk = faiss_kind(s->kind);
    if (fk == FVSEARCH_FAISS_INDEX_IVFPQ && n < 1024) fk = FVSEARCH_FAISS_INDEX_FLAT;
    fvsearch_faiss *f = fvsearch_faiss_create(fk, DIM, n, vecs, err, errlen);
    if (!f) return -1;
    if (n && fvsearch_faiss_add(f, n, vecs, ids, err, errlen)) {
        fvsearch_faiss_destroy(f);
        return -1;
    }
    fvsearch_faiss_destroy(s->f);
    s->f = f;
    idtab_free(&s->tomb);
    s->stale = 0;
    return 0;
}

/* Rebuilds the FAISS index from its live vectors, dropping tombstones
 * (and training IVFPQ once there are enough vectors). */
static int faiss_compact(fvsearch *s, char *err, size_t errlen) {
    size_t total = fvsearch_faiss_count(s->f), n = 0;
    idtab seen = {0};
    int64_t *all = fvi_malloc((total ? total : 1) * sizeof *all);
    int64_t *ids = fvi_malloc((total ? total : 1) * sizeof *ids);
    float *vecs = total <= SIZE_MAX / (DIM * sizeof(float)) / 2
                      ? fvi_malloc((total ? total : 1) * DIM * sizeof(float))
                      : NULL;
    int rc = -1;
    if (!all || !ids || !vecs) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    fvsearch_faiss_ids(s->f, all);
    if (idtab_reserve(&seen, total)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < total; i++) {
        if (idtab_get(&s->tomb, all[i]) || idtab_get(&seen, all[i])) continue;
        idtab_put(&seen, all[i], 0);
        if (fvsearch_faiss_reconstruct(s->f, all[i], vecs + n * DIM)) {
            snprintf(err, errlen, "faiss: cannot reconstruct id %lld", (long long)all[i]);
            goto out;
        }
        ids[n++] = all[i];
    }
    rc = faiss_build(s, n, ids, vecs, err, errlen);
out:
    idtab_free(&seen);
    fvi_free(all);
    fvi_free(ids);
    fvi_free(vecs);
    return rc;
}

/* ------------------------------------------------------------ add/remove */

int fvsearch_add(fvsearch *s, size_t n, const int64_t *ids, const float *vecs, char *err,
                 size_t errlen) {
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] == EMPTY || ids[i] == GONE || idtab_get(&s->ids, ids[i])) {
            snprintf(err, errlen, "id %lld is already in the index", (long long)ids[i]);
            return -1;
        }
    if (idtab_reserve(&s->ids, n)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (is_faiss(s->kind)) {
        /* A re-added id that is still a tombstone: FAISS keeps the old
         * vector too, under the same id (IndexIDMap2 maps the id to the
         * newest), so queries dedupe ids and recompute distances from the
         * newest vector; compaction later drops the stale copy. */
        for (size_t i = 0; i < n; i++)
            if (!idtab_del(&s->tomb, ids[i])) s->stale++;
        if (!s->f || (fvsearch_faiss_count(s->f) == 0 && s->kind == FVSEARCH_FAISS_IVFPQ)) {
            if (faiss_build(s, n, ids, vecs, err, errlen)) return -1;
        } else if (fvsearch_faiss_add(s->f, n, vecs, ids, err, errlen)) {
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            idtab_put(&s->ids, ids[i], 0);
            s->checksum += fvsearch_id_hash(ids[i]);
        }
        /* An IVFPQ index that started flat trains once it is big enough. */
        if (s->kind == FVSEARCH_FAISS_IVFPQ && s->ids.live >= 1024 &&
            fvsearch_faiss_kind(s->f) == FVSEARCH_FAISS_INDEX_FLAT)
            return faiss_compact(s, err, errlen);
        return 0;
    }
    if (grow_rows(s, s->n + n)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* The spill file first: the only step that can fail, before any row
     * becomes visible. */
    if (s->spill >= 0 &&
        spill_io(s->spill, 1, (void *)(uintptr_t)vecs, n * ROWBYTES, s->n * ROWBYTES)) {
        snprintf(err, errlen, "cannot write the spill file: %s", strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        put_row(s, s->n, ids[i], vecs + i * DIM);
        idtab_put(&s->ids, ids[i], s->n);
        s->checksum += fvsearch_id_hash(ids[i]);
        s->n++;
    }
    maybe_pool(s);
    return 0;
}

int fvsearch_remove(fvsearch *s, int64_t id, char *err, size_t errlen) {
    size_t *rowp = idtab_get(&s->ids, id);
    if (!rowp) return 1;
    size_t row = *rowp, last = s->n - 1;
    if (is_faiss(s->kind)) {
        if (idtab_reserve(&s->tomb, 1)) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    } else if (row != last && s->spill >= 0) {
        /* The last row moves into the hole, in the file too. */
        float v[DIM];
        if (get_row(s, last, v) || spill_io(s->spill, 1, v, ROWBYTES, row * ROWBYTES)) {
            snprintf(err, errlen, "cannot move a row of the spill file: %s", strerror(errno));
            return -1;
        }
    }
    idtab_del(&s->ids, id);
    s->checksum -= fvsearch_id_hash(id);
    if (is_faiss(s->kind)) {
        idtab_put(&s->tomb, id, 0);
        if (s->tomb.live + s->stale > 256 + s->ids.live / 10) return faiss_compact(s, err, errlen);
        return 0;
    }
    if (row != last) {
        if (s->rows) memcpy(s->rows + row * DIM, s->rows + last * DIM, ROWBYTES);
        if (s->norms) s->norms[row] = s->norms[last];
        s->rowid[row] = s->rowid[last];
        if (s->kind == FVSEARCH_INT8) {
            memcpy(s->codes + row * DIM, s->codes + last * DIM, DIM);
            s->info[row] = s->info[last];
        }
        *idtab_get(&s->ids, s->rowid[row]) = row;
    }
    s->n--;
    return 0;
}

/* ------------------------------------------------------------ queries */

typedef struct cand {
    float d;
    int64_t id;
    size_t row;
} cand;

static int cand_less(const cand *a, const cand *b) {
    return a->d < b->d || (a->d == b->d && a->id < b->id);
}

static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    return cand_less(x, y) ? -1 : cand_less(y, x);
}

/* Max-heap of the c best (smallest) approximate distances. */
static void heap_push(cand *h, size_t *n, size_t c, cand v) {
    if (*n < c) {
        size_t i = (*n)++;
        h[i] = v;
        while (i > 0) {
            size_t p = (i - 1) / 2;
            if (!cand_less(&h[p], &h[i])) break;
            cand t = h[p];
            h[p] = h[i];
            h[i] = t;
            i = p;
        }
        return;
    }
    if (!cand_less(&v, &h[0])) return;
    h[0] = v;
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < *n && cand_less(&h[m], &h[l])) m = l;
        if (r < *n && cand_less(&h[m], &h[r])) m = r;
        if (m == i) break;
        cand t = h[m];
        h[m] = h[i];
        h[i] = t;
        i = m;
    }
}

/* One scan thread's results.  exact: heap holds its c best rows by the
 * sgemv distance.  exact-int8: heap holds its k best upper bounds, list
 * every row whose lower bound was within the k-th upper bound when seen. */
typedef struct part {
    cand *heap, *list;
    size_t nh, nl, capl;
    int failed;
} part;

typedef struct scan {
    const fvsearch *s;
    const float *q;
    float qn; /* |q|^2 */
    size_t c; /* heap size */
    /* exact-int8 */
    int8_t qc[DIM];
    float qs, qlen, qerr; /* scale, |q|, |q - qs * qc| (rounded up) */
    part *parts;
} scan;

static void scan_exact(void *ctx, int begin, int end, int worker) {
    scan *sc = ctx;
    const fvsearch *s = sc->s;
    part *p = &sc->parts[worker];
    float dots[BLOCK];
    for (size_t b = (size_t)begin; b < (size_t)end; b++) {
        size_t r0 = b * BLOCK, m = s->n - r0 < BLOCK ? s->n - r0 : BLOCK;
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)m, DIM, 1.0f, s->rows + r0 * DIM, DIM, sc->q,
                    1, 0.0f, dots, 1);
        for (size_t i = 0; i < m; i++) {
            cand v = {sc->qn + s->norms[r0 + i] - 2.0f * dots[i], s->rowid[r0 + i], r0 + i};
            heap_push(p->heap, &p->nh, sc->c, v);
        }
    }
}

/* Drops list entries that can no longer make the top k; grows the list
 * when that frees too little.  -1: out of memory. */
static int prune(part *p, float thr) {
    size_t w = 0;
    for (size_t i = 0; i < p->nl; i++)
        if (p->list[i].d <= thr) p->list[w++] = p->list[i];
    p->nl = w;
    if (w <= p->capl / 2) return 0;
    if (p->capl > SIZE_MAX / 2 / sizeof(cand)) return -1;
    cand *l = fvi_realloc(p->list, 2 * p->capl * sizeof(cand));
    if (!l) return -1;
    p->list = l;
    p->capl *= 2;
    return 0;
}

/*
 * The int8 scan, and why its answers are exact.  With q ~ qs * qc and
 * x ~ s * c (errors eq and ex in L2), the int8 dot a = qs * s * (qc . c)
 * differs from q . x by at most |q| ex + eq (|x| + ex) (Cauchy-Schwarz on
 * q.(x - x') + (q - q').x').  So the true squared distance lies within
 * 2 * that bound (plus a margin for float rounding) of |q|^2 + |x|^2 - 2a.
 * A row can be among the k nearest only if its lower bound is at most the
 * k-th smallest upper bound; those rows (usually a few more than k) are
 * re-ranked with fv_distance on the float32 rows.  The answer therefore
 * equals exact's whatever the data, near-ties included.
 */
static void scan_int8(void *ctx, int begin, int end, int worker) {
    scan *sc = ctx;
    const fvsearch *s = sc->s;
    part *p = &sc->parts[worker];
    int32_t dots[BLOCK];
    float lo[BLOCK], hi[BLOCK];
    float thr = INFINITY;
    for (size_t b = (size_t)begin; b < (size_t)end && !p->failed; b++) {
        size_t r0 = b * BLOCK, m = s->n - r0 < BLOCK ? s->n - r0 : BLOCK;
        const rowinfo *info = s->info + r0;
        fvsearch_dots_i8(sc->qc, s->codes + r0 * DIM, m, dots);
        /* Branch-free, so the compiler vectorises it. */
        for (size_t i = 0; i < m; i++) {
            float a = sc->qs * info[i].scale * (float)dots[i];
            float approx = sc->qn + info[i].norm - 2.0f * a;
            float bound = 2.0f * (sc->qlen * info[i].err + sc->qerr * info[i].lpe) +
                          1e-5f * (sc->qn + info[i].norm) + 1e-6f;
            lo[i] = approx - bound;
            hi[i] = approx + bound;
        }
        for (size_t i = 0; i < m; i++) {
            if (lo[i] > thr) continue;
            cand h = {hi[i], s->rowid[r0 + i], r0 + i};
            heap_push(p->heap, &p->nh, sc->c, h);
            if (p->nh == sc->c) thr = p->heap[0].d;
            if (p->nl == p->capl && prune(p, thr)) {
                p->failed = 1;
                break;
            }
            p->list[p->nl++] = (cand){lo[i], h.id, h.row};
        }
    }
}

static int query_exact(fvsearch *s, const float *q, size_t k, fvsearch_hit *hits, size_t *nhits,
                       char *err, size_t errlen) {
    int int8 = s->kind == FVSEARCH_INT8;
    size_t n = s->n, nblocks = (n + BLOCK - 1) / BLOCK;
    fvi_workers *pool = n >= SPLIT_MIN ? s->pool : NULL;
    size_t np = (size_t)fvi_workers_size(pool);
    scan sc = {.s = s, .q = q, .c = int8 ? k : k + 32};
    if (sc.c > n) sc.c = n;
    size_t capl = 4 * sc.c + 64;
    int rc = -1;
    cand *all = NULL;
    sc.parts = fvi_calloc(np, sizeof *sc.parts);
    if (!sc.parts) goto oom;
    for (size_t i = 0; i < np; i++) {
        sc.parts[i].heap = fvi_malloc((sc.c ? sc.c : 1) * sizeof(cand));
        sc.parts[i].list = int8 ? fvi_malloc(capl * sizeof(cand)) : NULL;
        sc.parts[i].capl = capl;
        if (!sc.parts[i].heap || (int8 && !sc.parts[i].list)) goto oom;
    }
    double qn = 0;
    for (int i = 0; i < DIM; i++) qn += (double)q[i] * q[i];
    sc.qn = (float)qn;
    if (int8) {
        sc.qs = quantise(q, sc.qc);
        sc.qlen = nextafterf((float)sqrt(qn), INFINITY);
        sc.qerr = nextafterf((float)quant_error(q, sc.qs, sc.qc), INFINITY);
    }
    if (n && sc.c) fvi_workers_run(pool, (int)nblocks, 1, int8 ? scan_int8 : scan_exact, &sc);
    /* Merge the parts: exact re-ranks every part's heap; int8 re-ranks the
     * listed rows whose lower bound is within the k-th upper bound. */
    size_t total = 0;
    float thr = INFINITY;
    for (size_t i = 0; i < np; i++) {
        if (sc.parts[i].failed) goto oom;
        total += int8 ? sc.parts[i].nl : sc.parts[i].nh;
    }
    if (int8) {
        cand *his = fvi_malloc((sc.c ? np * sc.c : 1) * sizeof *his);
        if (!his) goto oom;
        size_t nhi = 0;
        for (size_t i = 0; i < np; i++)
            for (size_t j = 0; j < sc.parts[i].nh; j++) his[nhi++] = sc.parts[i].heap[j];
        qsort(his, nhi, sizeof *his, cmp_cand);
        if (nhi >= sc.c && sc.c) thr = his[sc.c - 1].d;
        fvi_free(his);
    }
    all = fvi_malloc((total ? total : 1) * sizeof *all);
    if (!all) goto oom;
    size_t na = 0;
    for (size_t i = 0; i < np; i++) {
        const part *p = &sc.parts[i];
        const cand *src = int8 ? p->list : p->heap;
        size_t m = int8 ? p->nl : p->nh;
        for (size_t j = 0; j < m; j++)
            if (!int8 || src[j].d <= thr) all[na++] = src[j];
    }
    for (size_t i = 0; i < na; i++) {
        float v[DIM];
        if (get_row(s, all[i].row, v)) {
            snprintf(err, errlen, "cannot read the spill file: %s", strerror(errno));
            goto out;
        }
        all[i].d = fv_distance(q, v);
    }
    qsort(all, na, sizeof *all, cmp_cand);
    *nhits = na < k ? na : k;
    for (size_t i = 0; i < *nhits; i++) {
        hits[i].id = all[i].id;
        hits[i].distance = all[i].d;
    }
    rc = 0;
    goto out;
oom:
    snprintf(err, errlen, "out of memory");
out:
    for (size_t i = 0; sc.parts && i < np; i++) {
        fvi_free(sc.parts[i].heap);
        fvi_free(sc.parts[i].list);
    }
    fvi_free(sc.parts);
    fvi_free(all);
    return rc;
}

static int query_faiss(fvsearch *s, const float *q, size_t k, fvsearch_hit *hits, size_t *nhits,
                       char *err, size_t errlen) {
    *nhits = 0;
    if (!s->f || s->ids.live == 0) return 0;
    size_t total = fvsearch_faiss_count(s->f);
    size_t kk = k + s->tomb.live + s->stale;
    if (kk > total) kk = total;
    float *d2 = fvi_malloc(kk * sizeof *d2);
    int64_t *ids = fvi_malloc(kk * sizeof *ids);
    cand *c = fvi_malloc(kk * sizeof *c);
    int rc = -1;
    if (!d2 || !ids || !c) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    if (fvsearch_faiss_search(s->f, q, kk, d2, ids, err, errlen)) goto out;
    size_t nc = 0;
    float v[DIM];
    for (size_t i = 0; i < kk; i++) {
        if (ids[i] < 0 || idtab_get(&s->tomb, ids[i])) continue;
        int dup = 0;
        for (size_t j = 0; j < nc && !dup; j++) dup = c[j].id == ids[i];
        if (dup) continue;
        if (fvsearch_faiss_reconstruct(s->f, ids[i], v)) continue;
        c[nc].d = fv_distance(q, v);
        c[nc].id = ids[i];
        c[nc].row = 0;
        nc++;
    }
    qsort(c, nc, sizeof *c, cmp_cand);
    *nhits = nc < k ? nc : k;
    for (size_t i = 0; i < *nhits; i++) {
        hits[i].id = c[i].id;
        hits[i].distance = c[i].d;
    }
    rc = 0;
out:
    fvi_free(d2);
    fvi_free(ids);
    fvi_free(c);
    return rc;
}

int fvsearch_query(fvsearch *s, const float *q, size_t k, fvsearch_hit *hits, size_t *nhits,
                   char *err, size_t errlen) {
    *nhits = 0;
    if (k == 0) return 0;
    return is_faiss(s->kind) ? query_faiss(s, q, k, hits, nhits, err, errlen)
                             : query_exact(s, q, k, hits, nhits, err, errlen);
}

/* Queries per matrix product of fvsearch_query_many: a 64 x BLOCK
 * distance tile (512 KiB) stays in cache while its heaps take it. */
#define QBLOCK 64

/* fvsearch_query_many on the float32 exact backend: per block of QBLOCK
 * queries, one sgemm per BLOCK rows gives every query's dot with every
 * row (each row is read once per QBLOCK queries, not once per query), the
 * heaps keep each query's k + 32 best, and those are re-ranked with
 * fv_distance as query_exact does. */
static int query_many_exact(fvsearch *s, size_t nq, const float *q, size_t k, fvsearch_hit *hits,
                            size_t *nhits, char *err, size_t errlen) {
    size_t n = s->n, c = k + 32 < n ? k + 32 : n;
    cand *heaps = fvi_malloc((c ? QBLOCK * c : 1) * sizeof *heaps);
    float *dots = fvi_malloc((size_t)QBLOCK * BLOCK * sizeof *dots);
    if (!heaps || !dots) {
        fvi_free(heaps);
        fvi_free(dots);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t q0 = 0; q0 < nq; q0 += QBLOCK) {
        size_t mq = nq - q0 < QBLOCK ? nq - q0 : QBLOCK;
        size_t nh[QBLOCK] = {0};
        float qn[QBLOCK] = {0};
        for (size_t a = 0; a < mq; a++) {
            double v = 0;
            for (int i = 0; i < DIM; i++)
                v += (double)q[(q0 + a) * DIM + i] * q[(q0 + a) * DIM + i];
            qn[a] = (float)v;
        }
        for (size_t r0 = 0; r0 < n && c; r0 += BLOCK) {
            size_t m = n - r0 < BLOCK ? n - r0 : BLOCK;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mq, (int)m, DIM, 1.0f,
                        q + q0 * DIM, DIM, s->rows + r0 * DIM, DIM, 0.0f, dots, (int)m);
            for (size_t a = 0; a < mq; a++) {
                cand *h = heaps + a * c;
                const float *d = dots + a * m;
                for (size_t i = 0; i < m; i++) {
                    float dist = qn[a] + s->norms[r0 + i] - 2.0f * d[i];
                    if (nh[a] == c && dist > h[0].d) continue; /* the common case, cheaply */
                    heap_push(h, &nh[a], c, (cand){dist, s->rowid[r0 + i], r0 + i});
                }
            }
        }
        for (size_t a = 0; a < mq; a++) {
            cand *h = heaps + a * c;
            const float *qa = q + (q0 + a) * DIM;
            for (size_t i = 0; i < nh[a]; i++) h[i].d = fv_distance(qa, s->rows + h[i].row * DIM);
            qsort(h, nh[a], sizeof *h, cmp_cand);
            size_t got = nh[a] < k ? nh[a] : k;
            nhits[q0 + a] = got;
            for (size_t i = 0; i < got; i++) {
                hits[(q0 + a) * k + i].id = h[i].id;
                hits[(q0 + a) * k + i].distance = h[i].d;
            }
        }
    }
    fvi_free(heaps);
    fvi_free(dots);
    return 0;
}

int fvsearch_query_many(fvsearch *s, size_t nq, const float *q, size_t k, fvsearch_hit *hits,
                        size_t *nhits, char *err, size_t errlen) {
    for (size_t i = 0; i < nq; i++) nhits[i] = 0;
    if (k == 0 || nq == 0) return 0;
    if (s->kind == FVSEARCH_EXACT) return query_many_exact(s, nq, q, k, hits, nhits, err, errlen);
    for (size_t i = 0; i < nq; i++)
        if (fvsearch_query(s, q + i * DIM, k, hits + i * k, &nhits[i], err, errlen)) return -1;
    return 0;
}

/* ------------------------------------------------------------ files */

/* Exact backends' file: "FVIX", u32 format 1, u32 kind, u32 dim, u64 n,
 * then n int64 ids and n x dim float32 rows (host byte order: an index
 * file is a cache for this machine, rebuilt from storage when unreadable). */
static const char MAGIC[4] = {'F', 'V', 'I', 'X'};

static int save_exact(const fvsearch *s, const char *tmp, char *err, size_t errlen) {
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot write %s", tmp);
        return -1;
    }
    uint32_t hdr[3] = {1, (uint32_t)s->kind, DIM};
    uint64_t n = s->n;
    int ok = fwrite(MAGIC, 4, 1, f) == 1 && fwrite(hdr, sizeof hdr, 1, f) == 1 &&
             fwrite(&n, sizeof n, 1, f) == 1 &&
             (n == 0 || fwrite(s->rowid, sizeof(int64_t), n, f) == n);
    if (s->rows) {
        ok = ok && (n == 0 || fwrite(s->rows, ROWBYTES, n, f) == n);
    } else {
        /* Spilled rows: copied through in blocks, not one read per row. */
        float *buf = ok && n ? fvi_malloc(BLOCK * ROWBYTES) : NULL;
        if (n && !buf) ok = 0;
        for (size_t r = 0; ok && r < n; r += BLOCK) {
            size_t m = n - r < BLOCK ? n - r : BLOCK;
            ok = !spill_io(s->spill, 0, buf, m * ROWBYTES, r * ROWBYTES) &&
                 fwrite(buf, ROWBYTES, m, f) == m;
        }
        fvi_free(buf);
    }
    if (fclose(f) != 0) ok = 0;
    if (!ok) snprintf(err, errlen, "cannot write %s", tmp);
    return ok ? 0 : -1;
}

int fvsearch_save(fvsearch *s, const char *path, char *err, size_t errlen) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        snprintf(err, errlen, "index path too long");
        return -1;
    }
    int rc;
    if (is_faiss(s->kind)) {
        if (!s->f && faiss_build(s, 0, NULL, NULL, err, errlen)) return -1;
        if ((s->tomb.live || s->stale) && faiss_compact(s, err, errlen)) return -1;
        rc = fvsearch_faiss_write(s->f, tmp, err, errlen);
    } else {
        rc = save_exact(s, tmp, err, errlen);
    }
    if (!rc && rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename %s", tmp);
        rc = -1;
    }
    if (rc) remove(tmp);
    return rc;
}

static fvsearch *load_exact(fvsearch *s, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s", path);
        fvsearch_destroy(s);
        return NULL;
    }
    char magic[4];
    uint32_t hdr[3];
    uint64_t n = 0;
    int64_t *ids = NULL;
    float *rows = NULL;
    int ok = fread(magic, 4, 1, f) == 1 && memcmp(magic, MAGIC, 4) == 0 &&
             fread(hdr, sizeof hdr, 1, f) == 1 && hdr[0] == 1 && hdr[1] == (uint32_t)s->kind &&
             hdr[2] == DIM && fread(&n, sizeof n, 1, f) == 1;
    /* The length must match the file before anything is allocated. */
    if (ok && fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        uint64_t want = 4 + sizeof hdr + sizeof n;
        ok = size >= 0 && n <= (uint64_t)size / (sizeof(int64_t) + DIM * sizeof(float)) &&
             (uint64_t)size == want + n * (sizeof(int64_t) + DIM * sizeof(float)) &&
             fseek(f, (long)want, SEEK_SET) == 0;
    } else {
        ok = 0;
    }
    if (ok && n) {
        ids = fvi_malloc(n * sizeof *ids);
        rows = fvi_malloc(n * DIM * sizeof *rows);
        ok = ids && rows && fread(ids, sizeof *ids, n, f) == n &&
             fread(rows, DIM * sizeof(float), n, f) == n;
    }
    fclose(f);
    if (ok && fvsearch_add(s, n, ids, rows, err, errlen))
        ok = 0;
    else if (!ok)
        snprintf(err, errlen, "%s is not a %s index file", path, fvsearch_kind_name(s->kind));
    fvi_free(ids);
    fvi_free(rows);
    if (!ok) {
        fvsearch_destroy(s);
        return NULL;
    }
    return s;
}

fvsearch *fvsearch_load(fvsearch_kind kind, const char *path, char *err, size_t errlen) {
    fvsearch *s = fvsearch_create(kind, err, errlen);
    if (!s) return NULL;
    if (!is_faiss(kind)) return load_exact(s, path, err, errlen);
    s->f = fvsearch_faiss_read(path, faiss_kind(kind), err, errlen);
    size_t n = s->f ? fvsearch_faiss_count(s->f) : 0;
    int64_t *ids = s->f ? fvi_malloc((n ? n : 1) * sizeof *ids) : NULL;
    if (!ids || idtab_reserve(&s->ids, n)) {
        if (s->f) snprintf(err, errlen, "out of memory");
        fvi_free(ids);
        fvsearch_destroy(s);
        return NULL;
    }
    fvsearch_faiss_ids(s->f, ids);
    for (size_t i = 0; i < n; i++) {
        if (idtab_get(&s->ids, ids[i])) continue; /* a corrupt file's duplicate */
        idtab_put(&s->ids, ids[i], 0);
        s->checksum += fvsearch_id_hash(ids[i]);
    }
    fvi_free(ids);
    return s;
}
