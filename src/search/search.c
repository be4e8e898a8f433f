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
#include "search.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "faceverify.h"
#include "faiss_wrap.h"
#include "fvi.h"

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

uint64_t fvi_search_id_hash(int64_t id) {
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

struct fvi_search {
    fvi_search_kind kind;
    idtab ids; /* live ids -> row (exact backends) */
    uint64_t checksum;
    /* exact, exact-int8 */
    size_t n, cap;
    float *rows, *norms;
    int64_t *rowid;
    int8_t *codes; /* int8 only */
    float *scales;
    /* faiss */
    fvi_faiss *f;
    idtab tomb;
    size_t stale; /* superseded copies of re-added ids still in f */
};

static const char *const NAMES[FVI_SEARCH_KINDS] = {"exact", "exact-int8", "faiss-flat",
                                                    "faiss-hnsw", "faiss-ivfpq"};

int fvi_search_kind_parse(const char *name, fvi_search_kind *out) {
    for (int k = 0; k < FVI_SEARCH_KINDS; k++)
        if (name && strcmp(name, NAMES[k]) == 0) {
            *out = (fvi_search_kind)k;
            return 0;
        }
    return -1;
}

const char *fvi_search_kind_name(fvi_search_kind kind) {
    return (unsigned)kind < FVI_SEARCH_KINDS ? NAMES[kind] : "?";
}

static int is_faiss(fvi_search_kind k) {
    return k >= FVI_SEARCH_FAISS_FLAT;
}

static int faiss_kind(fvi_search_kind k) {
    return k == FVI_SEARCH_FAISS_HNSW    ? FVI_FAISS_HNSW
           : k == FVI_SEARCH_FAISS_IVFPQ ? FVI_FAISS_IVFPQ
                                         : FVI_FAISS_FLAT;
}

fvi_search *fvi_search_create(fvi_search_kind kind, char *err, size_t errlen) {
    if ((unsigned)kind >= FVI_SEARCH_KINDS) {
        snprintf(err, errlen, "unknown search backend");
        return NULL;
    }
    fvi_search *s = fvi_calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->kind = kind;
    return s;
}

void fvi_search_destroy(fvi_search *s) {
    if (!s) return;
    idtab_free(&s->ids);
    idtab_free(&s->tomb);
    fvi_free(s->rows);
    fvi_free(s->norms);
    fvi_free(s->rowid);
    fvi_free(s->codes);
    fvi_free(s->scales);
    fvi_faiss_destroy(s->f);
    fvi_free(s);
}

fvi_search_kind fvi_search_kind_of(const fvi_search *s) {
    return s->kind;
}

size_t fvi_search_count(const fvi_search *s) {
    return s->ids.live;
}

uint64_t fvi_search_checksum(const fvi_search *s) {
    return s->checksum;
}

int fvi_search_contains(const fvi_search *s, int64_t id) {
    return idtab_get(&s->ids, id) != NULL;
}

size_t fvi_search_memory(const fvi_search *s) {
    size_t b = s->ids.cap * (sizeof(int64_t) + sizeof(size_t)) +
               s->tomb.cap * (sizeof(int64_t) + sizeof(size_t));
    if (s->f) return b + fvi_faiss_memory(s->f);
    b += s->cap * (DIM * sizeof(float) + sizeof(float) + sizeof(int64_t));
    if (s->kind == FVI_SEARCH_INT8) b += s->cap * (DIM + sizeof(float));
    return b;
}

/* ------------------------------------------------------------ exact rows */

static int grow_rows(fvi_search *s, size_t need) {
    if (need <= s->cap) return 0;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2 / (DIM * sizeof(float))) return -1;
        cap *= 2;
    }
    float *rows = fvi_realloc(s->rows, cap * DIM * sizeof(float));
    if (!rows) return -1;
    s->rows = rows;
    float *norms = fvi_realloc(s->norms, cap * sizeof(float));
    if (!norms) return -1;
    s->norms = norms;
    int64_t *rowid = fvi_realloc(s->rowid, cap * sizeof(int64_t));
    if (!rowid) return -1;
    s->rowid = rowid;
    if (s->kind == FVI_SEARCH_INT8) {
        int8_t *codes = fvi_realloc(s->codes, cap * DIM);
        if (!codes) return -1;
        s->codes = codes;
        float *scales = fvi_realloc(s->scales, cap * sizeof(float));
        if (!scales) return -1;
        s->scales = scales;
    }
    s->cap = cap;
    return 0;
}

/* Symmetric per-vector int8 quantisation: code = round(x / scale), scale =
 * max |x| / 127 (0 for the zero vector). */
static float quantise(const float *x, int8_t *code) {
    float m = 0;
    for (int i = 0; i < DIM; i++) m = fmaxf(m, fabsf(x[i]));
    float scale = m / 127.0f, inv = m > 0 ? 127.0f / m : 0;
    for (int i = 0; i < DIM; i++) code[i] = (int8_t)lrintf(x[i] * inv);
    return scale;
}

static void put_row(fvi_search *s, size_t r, int64_t id, const float *v) {
    memcpy(s->rows + r * DIM, v, DIM * sizeof(float));
    float nn = 0;
    for (int i = 0; i < DIM; i++) nn += v[i] * v[i];
    s->norms[r] = nn;
    s->rowid[r] = id;
    if (s->kind == FVI_SEARCH_INT8) s->scales[r] = quantise(v, s->codes + r * DIM);
}

/* ------------------------------------------------------------ faiss */

/* (Re)builds s->f from n vectors: IVFPQ trains on them when there are
 * enough, else the index is flat until a later compaction. */
static int faiss_build(fvi_search *s, size_t n, const int64_t *ids, const float *vecs, char *err,
                       size_t errlen) {
    int fk = faiss_kind(s->kind);
    if (fk == FVI_FAISS_IVFPQ && n < 1024) fk = FVI_FAISS_FLAT;
    fvi_faiss *f = fvi_faiss_create(fk, DIM, n, vecs, err, errlen);
    if (!f) return -1;
    if (n && fvi_faiss_add(f, n, vecs, ids, err, errlen)) {
        fvi_faiss_destroy(f);
        return -1;
    }
    fvi_faiss_destroy(s->f);
    s->f = f;
    idtab_free(&s->tomb);
    s->stale = 0;
    return 0;
}

/* Rebuilds the FAISS index from its live vectors, dropping tombstones
 * (and training IVFPQ once there are enough vectors). */
static int faiss_compact(fvi_search *s, char *err, size_t errlen) {
    size_t total = fvi_faiss_count(s->f), n = 0;
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
    fvi_faiss_ids(s->f, all);
    if (idtab_reserve(&seen, total)) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < total; i++) {
        if (idtab_get(&s->tomb, all[i]) || idtab_get(&seen, all[i])) continue;
        idtab_put(&seen, all[i], 0);
        if (fvi_faiss_reconstruct(s->f, all[i], vecs + n * DIM)) {
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

int fvi_search_add(fvi_search *s, size_t n, const int64_t *ids, const float *vecs, char *err,
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
        if (!s->f || (fvi_faiss_count(s->f) == 0 && s->kind == FVI_SEARCH_FAISS_IVFPQ)) {
            if (faiss_build(s, n, ids, vecs, err, errlen)) return -1;
        } else if (fvi_faiss_add(s->f, n, vecs, ids, err, errlen)) {
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            idtab_put(&s->ids, ids[i], 0);
            s->checksum += fvi_search_id_hash(ids[i]);
        }
        /* An IVFPQ index that started flat trains once it is big enough. */
        if (s->kind == FVI_SEARCH_FAISS_IVFPQ && s->ids.live >= 1024 &&
            fvi_faiss_kind(s->f) == FVI_FAISS_FLAT)
            return faiss_compact(s, err, errlen);
        return 0;
    }
    if (grow_rows(s, s->n + n)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        put_row(s, s->n, ids[i], vecs + i * DIM);
        idtab_put(&s->ids, ids[i], s->n);
        s->checksum += fvi_search_id_hash(ids[i]);
        s->n++;
    }
    return 0;
}

int fvi_search_remove(fvi_search *s, int64_t id, char *err, size_t errlen) {
    size_t *rowp = idtab_get(&s->ids, id);
    if (!rowp) return 1;
    size_t row = *rowp;
    idtab_del(&s->ids, id);
    s->checksum -= fvi_search_id_hash(id);
    if (is_faiss(s->kind)) {
        if (idtab_reserve(&s->tomb, 1)) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        idtab_put(&s->tomb, id, 0);
        if (s->tomb.live + s->stale > 256 + s->ids.live / 10) return faiss_compact(s, err, errlen);
        return 0;
    }
    size_t last = s->n - 1;
    if (row != last) {
        memcpy(s->rows + row * DIM, s->rows + last * DIM, DIM * sizeof(float));
        s->norms[row] = s->norms[last];
        s->rowid[row] = s->rowid[last];
        if (s->kind == FVI_SEARCH_INT8) {
            memcpy(s->codes + row * DIM, s->codes + last * DIM, DIM);
            s->scales[row] = s->scales[last];
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

static int32_t dot_i8(const int8_t *a, const int8_t *b) {
    int32_t s = 0;
    for (int i = 0; i < DIM; i++) s += (int32_t)a[i] * b[i];
    return s;
}

static int query_exact(fvi_search *s, const float *q, size_t k, fvi_hit *hits, size_t *nhits,
                       char *err, size_t errlen) {
    size_t n = s->n;
    size_t c = s->kind == FVI_SEARCH_INT8 ? 4 * k + 64 : k + 32;
    if (c > n) c = n;
    cand *heap = fvi_malloc((c ? c : 1) * sizeof *heap);
    float *dots = s->kind == FVI_SEARCH_EXACT ? fvi_malloc((n ? n : 1) * sizeof *dots) : NULL;
    if (!heap || (s->kind == FVI_SEARCH_EXACT && !dots)) {
        fvi_free(heap);
        fvi_free(dots);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    float qn = 0;
    for (int i = 0; i < DIM; i++) qn += q[i] * q[i];
    size_t nh = 0;
    if (s->kind == FVI_SEARCH_EXACT) {
        if (n)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)n, DIM, 1.0f, s->rows, DIM, q, 1, 0.0f,
                        dots, 1);
        for (size_t i = 0; i < n; i++) {
            cand v = {qn + s->norms[i] - 2.0f * dots[i], s->rowid[i], i};
            heap_push(heap, &nh, c, v);
        }
    } else {
        int8_t qc[DIM];
        float qs = quantise(q, qc);
        for (size_t i = 0; i < n; i++) {
            float dot = qs * s->scales[i] * (float)dot_i8(qc, s->codes + i * DIM);
            cand v = {qn + s->norms[i] - 2.0f * dot, s->rowid[i], i};
            heap_push(heap, &nh, c, v);
        }
    }
    for (size_t i = 0; i < nh; i++) heap[i].d = fv_distance(q, s->rows + heap[i].row * DIM);
    qsort(heap, nh, sizeof *heap, cmp_cand);
    *nhits = nh < k ? nh : k;
    for (size_t i = 0; i < *nhits; i++) {
        hits[i].id = heap[i].id;
        hits[i].distance = heap[i].d;
    }
    fvi_free(heap);
    fvi_free(dots);
    return 0;
}

static int query_faiss(fvi_search *s, const float *q, size_t k, fvi_hit *hits, size_t *nhits,
                       char *err, size_t errlen) {
    *nhits = 0;
    if (!s->f || s->ids.live == 0) return 0;
    size_t total = fvi_faiss_count(s->f);
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
    if (fvi_faiss_search(s->f, q, kk, d2, ids, err, errlen)) goto out;
    size_t nc = 0;
    float v[DIM];
    for (size_t i = 0; i < kk; i++) {
        if (ids[i] < 0 || idtab_get(&s->tomb, ids[i])) continue;
        int dup = 0;
        for (size_t j = 0; j < nc && !dup; j++) dup = c[j].id == ids[i];
        if (dup) continue;
        if (fvi_faiss_reconstruct(s->f, ids[i], v)) continue;
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

int fvi_search_query(fvi_search *s, const float *q, size_t k, fvi_hit *hits, size_t *nhits,
                     char *err, size_t errlen) {
    *nhits = 0;
    if (k == 0) return 0;
    return is_faiss(s->kind) ? query_faiss(s, q, k, hits, nhits, err, errlen)
                             : query_exact(s, q, k, hits, nhits, err, errlen);
}

/* ------------------------------------------------------------ files */

/* Exact backends' file: "FVIX", u32 format 1, u32 kind, u32 dim, u64 n,
 * then n int64 ids and n x dim float32 rows (host byte order: an index
 * file is a cache for this machine, rebuilt from storage when unreadable). */
static const char MAGIC[4] = {'F', 'V', 'I', 'X'};

static int save_exact(const fvi_search *s, const char *tmp, char *err, size_t errlen) {
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "cannot write %s", tmp);
        return -1;
    }
    uint32_t hdr[3] = {1, (uint32_t)s->kind, DIM};
    uint64_t n = s->n;
    int ok = fwrite(MAGIC, 4, 1, f) == 1 && fwrite(hdr, sizeof hdr, 1, f) == 1 &&
             fwrite(&n, sizeof n, 1, f) == 1 &&
             (n == 0 || (fwrite(s->rowid, sizeof(int64_t), n, f) == n &&
                         fwrite(s->rows, DIM * sizeof(float), n, f) == n));
    if (fclose(f) != 0) ok = 0;
    if (!ok) snprintf(err, errlen, "cannot write %s", tmp);
    return ok ? 0 : -1;
}

int fvi_search_save(fvi_search *s, const char *path, char *err, size_t errlen) {
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) {
        snprintf(err, errlen, "index path too long");
        return -1;
    }
    int rc;
    if (is_faiss(s->kind)) {
        if (!s->f && faiss_build(s, 0, NULL, NULL, err, errlen)) return -1;
        if ((s->tomb.live || s->stale) && faiss_compact(s, err, errlen)) return -1;
        rc = fvi_faiss_write(s->f, tmp, err, errlen);
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

static fvi_search *load_exact(fvi_search *s, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open %s", path);
        fvi_search_destroy(s);
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
    if (ok && fvi_search_add(s, n, ids, rows, err, errlen))
        ok = 0;
    else if (!ok)
        snprintf(err, errlen, "%s is not a %s index file", path, fvi_search_kind_name(s->kind));
    fvi_free(ids);
    fvi_free(rows);
    if (!ok) {
        fvi_search_destroy(s);
        return NULL;
    }
    return s;
}

fvi_search *fvi_search_load(fvi_search_kind kind, const char *path, char *err, size_t errlen) {
    fvi_search *s = fvi_search_create(kind, err, errlen);
    if (!s) return NULL;
    if (!is_faiss(kind)) return load_exact(s, path, err, errlen);
    s->f = fvi_faiss_read(path, faiss_kind(kind), err, errlen);
    size_t n = s->f ? fvi_faiss_count(s->f) : 0;
    int64_t *ids = s->f ? fvi_malloc((n ? n : 1) * sizeof *ids) : NULL;
    if (!ids || idtab_reserve(&s->ids, n)) {
        if (s->f) snprintf(err, errlen, "out of memory");
        fvi_free(ids);
        fvi_search_destroy(s);
        return NULL;
    }
    fvi_faiss_ids(s->f, ids);
    for (size_t i = 0; i < n; i++) {
        if (idtab_get(&s->ids, ids[i])) continue; /* a corrupt file's duplicate */
        idtab_put(&s->ids, ids[i], 0);
        s->checksum += fvi_search_id_hash(ids[i]);
    }
    fvi_free(ids);
    return s;
}
