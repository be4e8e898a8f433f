/*
 * index.c: faceverifyd's per-collection search index (see index.h).
 *
 * Each collection's entry holds an fvsearch (the vectors) and, sorted by
 * face id, what a search reports next to a face: its subject's id and
 * name, and per subject the running sums of its fused template (open-set
 * identify compares the probe with one template per subject: the subjects
 * of the HEAD nearest templates are the candidates, ranked by the exact
 * distance to their fused templates).  An entry is loaded on first use or
 * at start: from its index file when that matches storage (same count and
 * id checksum), else from storage, in one batch (so HNSW/IVFPQ build
 * once).  After that only the
 * change log is applied.  Requests run on the HTTP pool's threads;
 * searches in different collections run in parallel and one collection's
 * are serialised by its mutex.  BLAS runs single-threaded; exact scans
 * of large galleries split over the search library's own 2 threads; FAISS
 * uses OpenMP with its default thread count (OMP_NUM_THREADS limits it,
 * and OMP_WAIT_POLICY=PASSIVE stops idle threads spinning, see
 * docs/scaling.md).
 */
#include "server/index.h"
#include "server/crypto.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "server/db.h"

typedef struct meta {
    int64_t face, subject;
    char *name;
} meta;

/* A subject's running sums for its fused template (fv_fuse_templates: the
 * mean of its unit-length templates at their mean length), so open-set
 * identify compares a probe with one template per subject.  A template
 * leaving (or an entry loaded from its index file, which holds no
 * vectors here) makes the sums stale: they are read again from storage
 * the next time a search needs them, rather than kept per face twice. */
typedef struct subj {
    int64_t id;
    int count;     /* the subject's templates in the index */
    int nsum;      /* templates in sum (non-zero ones) */
    int stale;     /* sum and lensum need reading again */
    double lensum; /* sum of the templates' lengths */
    float *sum;    /* FV_EMBED_DIM floats: sum of the unit templates */
} subj;

typedef struct entry {
    int64_t coll;
    char model[FVS_MODEL_ID_MAX + 1]; /* the templates it holds were made by this model */
    fvsearch_kind kind;               /* backend of s (the collection's, else the server's) */
    int loaded;
    int64_t version, seq; /* collection version and change-log seq applied */
    int dirty;            /* changed since saved */
    int wanted;           /* the sync thread should reconcile it */
    fvsearch *s;
    meta *m;
    size_t nm, capm;
    /* Face ids whose sealed template does not open here (no key, another
     * key, an altered row): not searched, named in each answer. */
    int64_t *bad;
    size_t nbad, capbad;
    char bad_why[200];
    subj *sj; /* sorted by subject id */
    size_t nsj, capsj;
    size_t gallery; /* subjects with count > 0 */
    pthread_mutex_t mu;
    struct entry *next;
} entry;

struct fvs_index {
    fvs_store *st;
    fvs_index_config cfg;
    char tag[17];       /* hash of the database URL, in file names */
    pthread_mutex_t mu; /* guards the list and the wanted flags */
    entry *head;
    pthread_t thread;
    int running, stop;
};

fvs_index *fvs_index_create(fvs_store *st, const fvs_index_config *cfg) {
    fvs_index *ix = calloc(1, sizeof *ix);
    if (!ix) return NULL;
    ix->st = st;
    ix->cfg = *cfg;
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = cfg->db_url ? cfg->db_url : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    snprintf(ix->tag, sizeof ix->tag, "%016llx", (unsigned long long)h);
    pthread_mutex_init(&ix->mu, NULL);
    return ix;
}

static void meta_clear(entry *e) {
    for (size_t i = 0; i < e->nm; i++) free(e->m[i].name);
    e->nm = 0;
}

static void subj_clear(entry *e) {
    for (size_t i = 0; i < e->nsj; i++) free(e->sj[i].sum);
    e->nsj = 0;
    e->gallery = 0;
}

static void entry_reset(entry *e) {
    meta_clear(e);
    subj_clear(e);
    e->nbad = 0;
    e->bad_why[0] = 0;
    fvsearch_destroy(e->s);
    e->s = NULL;
    e->loaded = 0;
}

/* The ResNet's files keep their original names; a trained model's id
 * (models.c allows only [A-Za-z0-9._-]) is part of its files' names. */
static void index_path(const fvs_index *ix, const entry *e, char *buf, size_t len) {
    int resnet = strcmp(e->model, FV_MODEL_ID) == 0;
    snprintf(buf, len, "%s/%s-c%lld%s%s.%s.idx", ix->cfg.dir, ix->tag, (long long)e->coll,
             resnet ? "" : "-", resnet ? "" : e->model, fvsearch_kind_name(e->kind));
}

static void save_entry(fvs_index *ix, entry *e) {
    if (!ix->cfg.dir || !e->loaded) return;
    char path[4096], err[256];
    if (mkdir(ix->cfg.dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "faceverifyd: index dir %s: %s\n", ix->cfg.dir, strerror(errno));
        return;
    }
    index_path(ix, e, path, sizeof path);
    if (fvsearch_save(e->s, path, err, sizeof err))
        fprintf(stderr, "faceverifyd: saving index: %s\n", err);
    else
        e->dirty = 0;
}

static void stop_thread(fvs_index *ix) {
    if (!ix->running) return;
    pthread_mutex_lock(&ix->mu);
    ix->stop = 1;
    pthread_mutex_unlock(&ix->mu);
    pthread_join(ix->thread, NULL);
    ix->running = 0;
}

void fvs_index_destroy(fvs_index *ix) {
    if (!ix) return;
    stop_thread(ix);
    entry *e = ix->head;
    while (e) {
        entry *next = e->next;
        if (e->dirty) save_entry(ix, e);
        entry_reset(e);
        free(e->m);
        free(e->sj);
        free(e->bad);
        pthread_mutex_destroy(&e->mu);
        free(e);
        e = next;
    }
    pthread_mutex_destroy(&ix->mu);
    free(ix);
}

/* The entry of (coll, model), made on first use.  A collection whose model
 * is switched gets a second entry; the first stays (and keeps in sync)
 * should it be switched back. */
static entry *get_entry(fvs_index *ix, int64_t coll, const char *model) {
    pthread_mutex_lock(&ix->mu);
    entry *e = ix->head;
    while (e && (e->coll != coll || strcmp(e->model, model) != 0)) e = e->next;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (e) {
            e->coll = coll;
            snprintf(e->model, sizeof e->model, "%s", model);
            pthread_mutex_init(&e->mu, NULL);
            e->next = ix->head;
            ix->head = e;
        }
    }
    pthread_mutex_unlock(&ix->mu);
    return e;
}

void fvs_index_sizes(fvs_index *ix, fvs_index_size_fn fn, void *ctx) {
    /* Entries are only ever pushed at the head and freed at destroy, so
     * the list from the head taken now can be walked without ix->mu. */
    pthread_mutex_lock(&ix->mu);
    entry *e = ix->head;
    pthread_mutex_unlock(&ix->mu);
    for (; e; e = e->next) {
        pthread_mutex_lock(&e->mu);
        if (e->loaded && e->s) fn(ctx, e->kind, fvsearch_count(e->s), fvsearch_memory(e->s));
        pthread_mutex_unlock(&e->mu);
    }
}

/* ------------------------------------------------------------ metadata */

/* Index of key in n records of stride bytes sorted by the int64_t at
 * offset off, or where it would be inserted; *found says which. */
static size_t sorted_find(const void *base, size_t n, size_t stride, size_t off, int64_t key,
                          int *found) {
    const unsigned char *b = base;
    size_t lo = 0, hi = n;
    int64_t v;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        memcpy(&v, b + mid * stride + off, sizeof v);
        if (v < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < n) memcpy(&v, b + lo * stride + off, sizeof v);
    *found = lo < n && v == key;
    return lo;
}

/* Index of face in e->m, or where it would be inserted. */
static size_t meta_find(const entry *e, int64_t face, int *found) {
    return sorted_find(e->m, e->nm, sizeof *e->m, offsetof(meta, face), face, found);
}

static int meta_add(entry *e, int64_t face, int64_t subject, const char *name) {
    int found;
    size_t at = meta_find(e, face, &found);
    if (found) return 0;
    if (e->nm == e->capm) {
        size_t cap = e->capm ? e->capm * 2 : 256;
        meta *m = realloc(e->m, cap * sizeof *m);
        if (!m) return -1;
        e->m = m;
        e->capm = cap;
    }
    char *nm = strdup(name);
    if (!nm) return -1;
    memmove(e->m + at + 1, e->m + at, (e->nm - at) * sizeof *e->m);
    e->m[at].face = face;
    e->m[at].subject = subject;
    e->m[at].name = nm;
    e->nm++;
    return 0;
}

static void meta_del(entry *e, int64_t face) {
    int found;
    size_t at = meta_find(e, face, &found);
    if (!found) return;
    free(e->m[at].name);
    memmove(e->m + at, e->m + at + 1, (e->nm - at - 1) * sizeof *e->m);
    e->nm--;
}

/* Records face as unreadable (kept in id order, once).  -1: out of
 * memory. */
static int bad_add(entry *e, int64_t face) {
    size_t at = 0;
    while (at < e->nbad && e->bad[at] < face) at++;
    if (at < e->nbad && e->bad[at] == face) return 0;
    if (e->nbad == e->capbad) {
        size_t cap = e->capbad ? e->capbad * 2 : 16;
        int64_t *b = realloc(e->bad, cap * sizeof *b);
        if (!b) return -1;
        e->bad = b;
        e->capbad = cap;
    }
    memmove(e->bad + at + 1, e->bad + at, (e->nbad - at) * sizeof *e->bad);
    e->bad[at] = face;
    e->nbad++;
    return 0;
}

static void bad_del(entry *e, int64_t face) {
    for (size_t i = 0; i < e->nbad; i++) {
        if (e->bad[i] != face) continue;
        memmove(e->bad + i, e->bad + i + 1, (e->nbad - i - 1) * sizeof *e->bad);
        e->nbad--;
        return;
    }
}

/* Keeps the reason a store read gave for its unreadable templates (err:
 * "" when all opened) and clears err for the caller. */
static void bad_note(entry *e, char *err, size_t errlen) {
    if (err[0]) snprintf(e->bad_why, sizeof e->bad_why, "%s", err);
    if (errlen) err[0] = 0;
}

/* ------------------------------------------------------------ fused templates */

/* Index of subject id in e->sj, or where it would be inserted. */
static size_t subj_find(const entry *e, int64_t id, int *found) {
    return sorted_find(e->sj, e->nsj, sizeof *e->sj, offsetof(subj, id), id, found);
}

/* The sums of subject id, made (empty) when absent; NULL: out of memory.
 * Pointers into e->sj last until the next subj_get. */
static subj *subj_get(entry *e, int64_t id) {
    int found;
    size_t at = subj_find(e, id, &found);
    if (found) return &e->sj[at];
    if (e->nsj == e->capsj) {
        size_t cap = e->capsj ? e->capsj * 2 : 256;
        subj *sj = realloc(e->sj, cap * sizeof *sj);
        if (!sj) return NULL;
        e->sj = sj;
        e->capsj = cap;
    }
    float *sum = calloc(FV_EMBED_DIM, sizeof *sum);
    if (!sum) return NULL;
    memmove(e->sj + at + 1, e->sj + at, (e->nsj - at) * sizeof *e->sj);
    subj *s = &e->sj[at];
    memset(s, 0, sizeof *s);
    s->id = id;
    s->sum = sum;
    e->nsj++;
    return s;
}

/* Sets s's template count, keeping e->gallery (subjects with any). */
static void subj_count(entry *e, subj *s, int count) {
    if (s->count > 0 && count <= 0) e->gallery--;
    if (s->count <= 0 && count > 0) e->gallery++;
    s->count = count > 0 ? count : 0;
}

/* Adds one template to s's sums (a zero one, which has no direction,
 * counts but does not move the fused template). */
static void subj_sum(subj *s, const float *emb) {
    double l = 0;
    for (int k = 0; k < FV_EMBED_DIM; k++) l += (double)emb[k] * emb[k];
    l = sqrt(l);
    if (!(l > 0) || !isfinite(l)) return;
    for (int k = 0; k < FV_EMBED_DIM; k++) s->sum[k] += (float)(emb[k] / l);
    s->lensum += l;
    s->nsum++;
}

/* A template of subject joined the index.  -1: out of memory. */
static int fused_add(entry *e, int64_t subject, const float *emb) {
    subj *s = subj_get(e, subject);
    if (!s) return -1;
    subj_count(e, s, s->count + 1);
    if (!s->stale) subj_sum(s, emb);
    return 0;
}

/* A template of subject left the index: its sums are read again when next
 * needed. */
static void fused_del(entry *e, int64_t subject) {
    int found;
    size_t at = subj_find(e, subject, &found);
    if (!found) return;
    subj_count(e, &e->sj[at], e->sj[at].count - 1);
    e->sj[at].stale = 1;
}

/* After loading an index file: every subject of e->m counted, sums stale.
 * -1: out of memory. */
static int fused_from_meta(entry *e) {
    for (size_t i = 0; i < e->nm; i++) {
        subj *s = subj_get(e, e->m[i].subject);
        if (!s) return -1;
        subj_count(e, s, s->count + 1);
        s->stale = 1;
    }
    return 0;
}

typedef struct fuse_ctx {
    entry *e;
    subj *s;
} fuse_ctx;

static int fuse_row(void *ctx, int64_t face, int64_t subject, const char *name, const float *emb,
                    double quality) {
    (void)name;
    (void)quality;
    fuse_ctx *f = ctx;
    if (!emb || subject != f->s->id || !fvsearch_contains(f->e->s, face)) return 0;
    subj_count(f->e, f->s, f->s->count + 1);
    subj_sum(f->s, emb);
    return 0;
}

/* Reads stale sums of s again from storage (its templates in the index
 * and readable here).  e->mu held. */
static int subj_refresh(fvs_index *ix, entry *e, subj *s, char *err, size_t errlen) {
    if (!s->stale) return 0;
    memset(s->sum, 0, FV_EMBED_DIM * sizeof *s->sum);
    s->lensum = 0;
    s->nsum = 0;
    subj_count(e, s, 0);
    fuse_ctx f = {e, s};
    if (fvs_templates(ix->st, e->coll, s->id, e->model, fuse_row, &f, err, errlen)) return -1;
    if (errlen) err[0] = 0; /* unreadable ones: already named by the warning */
    s->stale = 0;
    return 0;
}

/* Distance from q to s's fused template; INFINITY when s has none. */
static float fused_distance(const subj *s, const float *q) {
    double l = 0;
    for (int k = 0; k < FV_EMBED_DIM; k++) l += (double)s->sum[k] * s->sum[k];
    l = sqrt(l);
    if (s->nsum == 0 || !(l > 0)) return INFINITY;
    double scale = s->lensum / s->nsum / l, d = 0;
    for (int k = 0; k < FV_EMBED_DIM; k++) {
        double x = (double)q[k] - s->sum[k] * scale;
        d += x * x;
    }
    return (float)sqrt(d);
}

/* ------------------------------------------------------------ loading */

typedef struct batch {
    entry *e;
    int64_t *ids;
    float *vecs;
    size_t n, cap;
} batch;

static int batch_row(void *ctx, int64_t face, int64_t subject, const char *name, const float *emb,
                     double quality) {
    (void)quality;
    batch *b = ctx;
    if (!emb) return bad_add(b->e, face) ? 1 : 0;
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 1024;
        if (cap > SIZE_MAX / (FV_EMBED_DIM * sizeof(float))) return 1;
        int64_t *ids = realloc(b->ids, cap * sizeof *ids);
        if (!ids) return 1;
        b->ids = ids;
        float *v = realloc(b->vecs, cap * FV_EMBED_DIM * sizeof *v);
        if (!v) return 1;
        b->vecs = v;
        b->cap = cap;
    }
    b->ids[b->n] = face;
    memcpy(b->vecs + b->n * FV_EMBED_DIM, emb, FV_EMBED_DIM * sizeof(float));
    b->n++;
    return meta_add(b->e, face, subject, name) || fused_add(b->e, subject, emb) ? 1 : 0;
}

static int meta_row(void *ctx, int64_t face, int64_t subject, const char *name) {
    return meta_add(ctx, face, subject, name) ? 1 : 0;
}

/* Settings of a new or loaded index: two scan threads for big exact
 * galleries, and exact-int8's float32 rows (read only to re-rank a few
 * candidates per query) in a file in the index dir rather than in memory;
 * without a dir, or if the file cannot be made, they stay in memory. */
static void tune(fvs_index *ix, fvsearch *s) {
    fvsearch_set_threads(s, 2);
    if (!ix->cfg.dir || fvsearch_kind_of(s) != FVSEARCH_INT8) return;
    char err[256] = "cannot create the directory";
    if ((mkdir(ix->cfg.dir, 0700) != 0 && errno != EEXIST) ||
        fvsearch_spill(s, ix->cfg.dir, err, sizeof err))
        fprintf(stderr, "faceverifyd: exact-int8 rows stay in memory: cannot spill to %s: %s\n",
                ix->cfg.dir, err);
}

/* Fills e from storage in one batch; e->mu held. */
static int build_from_store(fvs_index *ix, entry *e, char *err, size_t errlen) {
    entry_reset(e);
    e->s = fvsearch_create(e->kind, err, errlen);
    if (!e->s) return -1;
    tune(ix, e->s);
    batch b = {e, NULL, NULL, 0, 0};
    int rc = fvs_templates(ix->st, e->coll, 0, e->model, batch_row, &b, err, errlen);
    if (!rc) bad_note(e, err, errlen);
    if (!rc) rc = fvsearch_add(e->s, b.n, b.ids, b.vecs, err, errlen);
    free(b.ids);
    free(b.vecs);
    if (rc) {
        entry_reset(e);
        return -1;
    }
    e->loaded = 1;
    e->dirty = 1;
    return 0;
}

/* Loads e from its index file if that matches storage (count and id
 * checksum), else from storage.  e->mu held.  *rebuilt: 1 when storage
 * was read. */
static int load_entry(fvs_index *ix, entry *e, int *rebuilt, char *err, size_t errlen) {
    *rebuilt = 0;
    /* Version and seq first: a write racing with the load is applied
     * again from the change log, which is idempotent. */
    if (fvs_collection_version(ix->st, e->coll, &e->version, err, errlen) ||
        fvs_change_seq(ix->st, e->coll, &e->seq, err, errlen))
        return -1;
    if (ix->cfg.dir) {
        char path[4096], lerr[256];
        index_path(ix, e, path, sizeof path);
        entry_reset(e);
        e->s = fvsearch_load(e->kind, path, lerr, sizeof lerr);
        if (e->s) {
            tune(ix, e->s);
            if (fvs_face_meta(ix->st, e->coll, e->model, meta_row, e, err, errlen)) {
                entry_reset(e);
                return -1;
            }
            uint64_t sum = 0;
            for (size_t i = 0; i < e->nm; i++) sum += fvsearch_id_hash(e->m[i].face);
            int same = fvsearch_count(e->s) == e->nm && fvsearch_checksum(e->s) == sum;
            if (same && fused_from_meta(e)) {
                entry_reset(e);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            if (same) {
                e->loaded = 1;
                e->dirty = 0;
                return 0;
            }
            fprintf(stderr,
                    "faceverifyd: index of collection %lld drifted from storage (%zu vs %zu "
                    "faces): rebuilding\n",
                    (long long)e->coll, fvsearch_count(e->s), e->nm);
        }
    }
    *rebuilt = 1;
    if (build_from_store(ix, e, err, errlen)) return -1;
    save_entry(ix, e);
    return 0;
}

/* ------------------------------------------------------------ changes */

typedef struct change {
    int64_t seq, face;
    int op;
} change;

typedef struct change_list {
    change *c;
    size_t n, cap;
} change_list;

static int change_row(void *ctx, int64_t seq, int64_t face, int op) {
    change_list *l = ctx;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        change *c = realloc(l->c, cap * sizeof *c);
        if (!c) return 1;
        l->c = c;
        l->cap = cap;
    }
    l->c[l->n++] = (change){seq, face, op};
    return 0;
}

typedef struct one_ctx {
    entry *e;
    char *err;
    size_t errlen;
    int failed;
} one_ctx;

static int one_row(void *ctx, int64_t face, int64_t subject, const char *name, const float *emb,
                   double quality) {
    (void)quality;
    one_ctx *o = ctx;
    if (!emb) {
        o->failed = bad_add(o->e, face) != 0;
        return o->failed;
    }
    if (fvsearch_contains(o->e->s, face)) return 0;
    if (fvsearch_add(o->e->s, 1, &face, emb, o->err, o->errlen) ||
        meta_add(o->e, face, subject, name) || fused_add(o->e, subject, emb)) {
        o->failed = 1;
        return 1;
    }
    return 0;
}

/* Reads e again from storage, with the version and change-log position
 * taken first (a write racing with the read is applied again later,
 * which is idempotent).  e->mu held. */
static int rebuild_current(fvs_index *ix, entry *e, char *err, size_t errlen) {
    return fvs_collection_version(ix->st, e->coll, &e->version, err, errlen) ||
                   fvs_change_seq(ix->st, e->coll, &e->seq, err, errlen) ||
                   build_from_store(ix, e, err, errlen)
               ? -1
               : 0;
}

/* Applies the change log after e->seq; e->mu held, e loaded. */
static int apply_changes(fvs_index *ix, entry *e, char *err, size_t errlen) {
    int64_t version = 0;
    if (fvs_collection_version(ix->st, e->coll, &version, err, errlen)) return -1;
    if (version == e->version) return 0;
    change_list l = {0};
    int rc = fvs_face_changes(ix->st, e->coll, e->seq, change_row, &l, err, errlen);
    if (!rc && l.n == 0) {
        /* The version moved without a face added or deleted: templates were
         * rewritten in place (encrypttemplates).  Read them all again, so a
         * process without the template key stops serving them at once. */
        free(l.c);
        if (build_from_store(ix, e, err, errlen)) return -1;
        e->version = version;
        return 0;
    }
    if (!rc && l.n > 0 && l.c[0].op == 0) {
        /* The log was pruned past our position: the marker is then the
         * oldest row left (fvs_face_changes_prune), and changes before it
         * may be missing, so read the collection again. */
        free(l.c);
        return rebuild_current(ix, e, err, errlen);
    }
    for (size_t i = 0; !rc && i < l.n; i++) {
        const change *c = &l.c[i];
        if (c->op > 0) {
            one_ctx o = {e, err, errlen, 0};
            rc = fvs_template_get(ix->st, e->coll, c->face, e->model, one_row, &o, err, errlen);
            if (!rc) bad_note(e, err, errlen);
            if (o.failed) rc = -1;
        } else if (fvsearch_remove(e->s, c->face, err, errlen) < 0) {
            rc = -1;
        } else {
            int found;
            size_t at = meta_find(e, c->face, &found);
            if (found) fused_del(e, e->m[at].subject);
            meta_del(e, c->face);
            bad_del(e, c->face);
        }
        if (!rc) {
            e->seq = c->seq;
            e->dirty = 1;
        }
    }
    free(l.c);
    if (!rc) e->version = version;
    return rc;
}

/* The backend a collection's index uses: its own setting (validated when
 * set; an unknown name read from storage falls back), else the server's. */
static fvsearch_kind backend_of(const fvs_index *ix, const char *name) {
    fvsearch_kind k;
    if (name && *name && fvsearch_kind_parse(name, &k) == 0) return k;
    return ix->cfg.backend;
}

const char *fvs_index_backend_in_force(const fvs_index *ix, const char *coll_backend) {
    return fvsearch_kind_name(backend_of(ix, coll_backend));
}

/* Makes e current with backend kind: loaded (again, when its backend
 * changed: PATCH /api/v1/collection through any process), and (when
 * check) with the change log applied.  e->mu held. */
static int refresh(fvs_index *ix, entry *e, fvsearch_kind kind, int check, char *err,
                   size_t errlen) {
    int rebuilt = 0;
    if (e->loaded && e->kind != kind) {
        if (e->dirty) save_entry(ix, e);
        entry_reset(e);
    }
    e->kind = kind;
    if (!e->loaded) return load_entry(ix, e, &rebuilt, err, errlen);
    return check ? apply_changes(ix, e, err, errlen) : 0;
}

/* ------------------------------------------------------------ sync thread */

static void on_notify(void *ctx, const char *payload) {
    fvs_index *ix = ctx;
    char *end = NULL;
    long long coll = strtoll(payload, &end, 10);
    if (!end || *end || coll <= 0) return;
    pthread_mutex_lock(&ix->mu);
    for (entry *e = ix->head; e; e = e->next)
        if (e->coll == coll) e->wanted = 1;
    pthread_mutex_unlock(&ix->mu);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *sync_main(void *arg) {
    fvs_index *ix = arg;
    int pg = ix->cfg.db_url && (strncmp(ix->cfg.db_url, "postgres://", 11) == 0 ||
                                strncmp(ix->cfg.db_url, "postgresql://", 13) == 0);
    fvs_listener *l = NULL;
    double last_reconcile = now_s(), last_connect = 0;
    for (;;) {
        pthread_mutex_lock(&ix->mu);
        int stop = ix->stop;
        pthread_mutex_unlock(&ix->mu);
        if (stop) break;
        char err[256];
        if (pg && !l && now_s() - last_connect > 1.0) {
            last_connect = now_s();
            l = fvs_pg_listen(ix->cfg.db_url, FVS_CHANGES_CHANNEL, err, sizeof err);
            if (!l) fprintf(stderr, "faceverifyd: index listener: %s\n", err);
            /* Whatever happened while not listening: reconcile now. */
            last_reconcile = 0;
        }
        if (l) {
            if (fvs_listener_wait(l, 100, on_notify, ix)) {
                fvs_listener_close(l);
                l = NULL;
            }
        } else {
            struct timespec ts = {0, 100 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        int all = ix->cfg.reconcile_s > 0 && now_s() - last_reconcile >= ix->cfg.reconcile_s;
        if (all) last_reconcile = now_s();
        /* Visit wanted entries; the list only grows, and entries are
         * freed only after this thread stops. */
        pthread_mutex_lock(&ix->mu);
        entry *e = ix->head;
        pthread_mutex_unlock(&ix->mu);
        for (; e; e = e->next) {
            pthread_mutex_lock(&ix->mu);
            int want = e->wanted || all;
            e->wanted = 0;
            pthread_mutex_unlock(&ix->mu);
            if (!want) continue;
            pthread_mutex_lock(&e->mu);
            int ok = e->loaded && apply_changes(ix, e, err, sizeof err) == 0;
            if (e->loaded && !ok) fprintf(stderr, "faceverifyd: index sync: %s\n", err);
            int64_t pruned = 0;
            /* With the log applied here, trim it (every node may; the
             * others rebuild if they were further behind than that). */
            if (ok && all && ix->cfg.changes_keep > 0 &&
                fvs_face_changes_prune(ix->st, e->coll, ix->cfg.changes_keep, &pruned, err,
                                       sizeof err))
                fprintf(stderr, "faceverifyd: index change-log prune: %s\n", err);
            pthread_mutex_unlock(&e->mu);
        }
    }
    fvs_listener_close(l);
    return NULL;
}

typedef struct coll_list {
    int64_t only; /* > 0: just this collection */
    fvs_collection *c;
    size_t n, cap;
} coll_list;

static int coll_row(void *ctx, const fvs_collection *coll) {
    coll_list *l = ctx;
    if (l->only > 0 && coll->id != l->only) return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        fvs_collection *c = realloc(l->c, cap * sizeof *c);
        if (!c) return 1;
        l->c = c;
        l->cap = cap;
    }
    l->c[l->n++] = *coll;
    return 0;
}

typedef int (*entry_fn)(fvs_index *ix, entry *e, fvsearch_kind kind, char *err, size_t errlen);

/* Calls fn with the entry of collection coll (0: of every collection) and
 * its current model locked, and its backend; *done counts the calls that
 * succeeded, and report (when set) hears of each. */
static int each_entry(fvs_index *ix, int64_t coll, entry_fn fn, fvs_index_report_fn report,
                      void *rctx, int *done, char *err, size_t errlen) {
    coll_list c = {0};
    c.only = coll;
    int rc = fvs_collection_each(ix->st, coll_row, &c, err, errlen);
    if (rc > 0) snprintf(err, errlen, "out of memory");
    *done = 0;
    for (size_t i = 0; !rc && i < c.n; i++) {
        entry *e = get_entry(ix, c.c[i].id, c.c[i].model);
        if (!e) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
            break;
        }
        pthread_mutex_lock(&e->mu);
        fvsearch_kind kind = backend_of(ix, c.c[i].index_backend);
        rc = fn(ix, e, kind, err, errlen);
        pthread_mutex_unlock(&e->mu);
        if (rc) break;
        (*done)++;
        if (report) report(rctx, &c.c[i], fvsearch_kind_name(kind));
    }
    free(c.c);
    return rc ? -1 : 0;
}

static int start_one(fvs_index *ix, entry *e, fvsearch_kind kind, char *err, size_t errlen) {
    if (refresh(ix, e, kind, 1, err, errlen) == 0) {
        if (e->nbad)
            fprintf(stderr,
                    "faceverifyd: collection %lld: %zu template%s not readable (%s): searches "
                    "name them; faceverifyd purge-unreadable deletes them\n",
                    (long long)e->coll, e->nbad, e->nbad == 1 ? "" : "s", e->bad_why);
        return 0;
    }
    /* Sealed templates without the right key: this collection answers 503
     * template_key_unavailable on its searches; the others are served. */
    if (strncmp(err, FVS_TKEY_ERROR, strlen(FVS_TKEY_ERROR)) == 0) {
        fprintf(stderr, "faceverifyd: collection %lld not indexed: %s\n", (long long)e->coll, err);
        return 0;
    }
    return -1;
}

int fvs_index_start(fvs_index *ix, char *err, size_t errlen) {
    int done = 0;
    if (each_entry(ix, 0, start_one, NULL, NULL, &done, err, errlen)) return -1;
    if (pthread_create(&ix->thread, NULL, sync_main, ix) != 0) {
        snprintf(err, errlen, "cannot start the index sync thread");
        return -1;
    }
    ix->running = 1;
    return 0;
}

static int rebuild_one(fvs_index *ix, entry *e, fvsearch_kind kind, char *err, size_t errlen) {
    e->kind = kind;
    if (rebuild_current(ix, e, err, errlen)) return -1;
    save_entry(ix, e);
    return 0;
}

int fvs_index_rebuild(fvs_index *ix, int64_t coll, fvs_index_report_fn report, void *rctx,
                      int *built, char *err, size_t errlen) {
    return each_entry(ix, coll, rebuild_one, report, rctx, built, err, errlen);
}

/* ------------------------------------------------------------ ranking */

/* Nearest templates examined per query: enough for k and top_k (both <=
 * 100) even when subjects have several templates each,
 * and their subjects are open-set identify's candidates. */
#define HEAD 256

typedef struct ranked {
    float d;
    int64_t subject;
    const char *name;
} ranked;

/* Ranks one query's hits (nearest first, exact distances). */
static json_t *rank_one(const ranked *order, size_t n, size_t total, float threshold, int top_k,
                        int k) {
    /* The vote: among the k nearest templates within threshold, the
     * subject with most; a tie goes to the subject seen first, i.e. the
     * one with the nearer template.  Independent of top_k. */
    size_t kk = (size_t)k < n ? (size_t)k : n;
    int64_t best_subject = 0;
    int best_votes = 0;
    float best_dist = 0;
    const char *best_name = "";
    for (size_t c = 0; c < kk && order[c].d <= threshold; c++) {
        int64_t sid = order[c].subject;
        int votes = 0;
        for (size_t d = 0; d < kk && order[d].d <= threshold; d++) votes += order[d].subject == sid;
        if (votes > best_votes) {
            best_votes = votes;
            best_subject = sid;
            best_dist = order[c].d;
            best_name = order[c].name;
        }
    }
    /* Candidates: subjects in order of their nearest template. */
    json_t *cands = json_array();
    int64_t added[FVS_TOP_K_MAX];
    size_t nadded = 0;
    if (top_k > FVS_TOP_K_MAX) top_k = FVS_TOP_K_MAX;
    for (size_t j = 0; j < n && nadded < (size_t)top_k; j++) {
        int64_t sid = order[j].subject;
        int seen = 0;
        for (size_t c = 0; c < nadded && !seen; c++) seen = added[c] == sid;
        if (seen) continue;
        added[nadded++] = sid;
        int votes = 0;
        for (size_t c = 0; c < kk && order[c].d <= threshold; c++) votes += order[c].subject == sid;
        float d = order[j].d;
        json_array_append_new(cands,
                              json_pack("{s:I, s:s, s:f, s:f, s:i}", "id", (json_int_t)sid, "name",
                                        order[j].name, "distance", (double)d, "similarity",
                                        (double)fv_similarity(d, threshold), "votes", votes));
    }
    json_t *match = json_null();
    if (best_votes > 0)
        match = json_pack("{s:I, s:s, s:f, s:f, s:i}", "id", (json_int_t)best_subject, "name",
                          best_name, "distance", (double)best_dist, "similarity",
                          (double)fv_similarity(best_dist, threshold), "votes", best_votes);
    return json_pack("{s:o, s:o, s:I, s:s}", "candidates", cands, "match", match, "templates",
                     (json_int_t)total, "decision", "knn_vote");
}

/* A subject and the distance from the probe to its fused template. */
typedef struct fused_hit {
    float d;
    const subj *s;
    const char *name;
} fused_hit;

static int fused_cmp(const void *a, const void *b) {
    float x = ((const fused_hit *)a)->d, y = ((const fused_hit *)b)->d;
    return x < y ? -1 : x > y;
}

/* Subjects the probe is compared with by fv_openset_decide: the nearest
 * and the cohort that normalises its score. */
#define OPENSET_SUBJECTS 21

/* Decides one probe at fpir among f (n subjects, ascending distances to
 * their fused templates) in a gallery of the given size.  NULL with err
 * set when the model has no FPIR calibration or memory runs out. */
static json_t *openset_one(const char *model, const fused_hit *f, size_t n, size_t gallery,
                           size_t total, double fpir, int top_k, char *err, size_t errlen) {
    float d[HEAD];
    for (size_t i = 0; i < n; i++) d[i] = f[i].d;
    fv_openset_decision dec = {0};
    dec.threshold = NAN;
    if (n > 0) {
        if (gallery < n) gallery = n;
        fv_status st = fv_openset_decide(model, d, n < OPENSET_SUBJECTS ? n : OPENSET_SUBJECTS,
                                         gallery, fpir, &dec);
        if (st != FV_OK) {
            snprintf(err, errlen, "open-set decision for model %s: %s", model, fv_strerror(st));
            return NULL;
        }
    }
    /* A gallery too small for a cohort is decided on the distance alone
     * (dec.score is then minus the distance): candidates below the first
     * are scored the same way, so that the list stays comparable. */
    int by_distance = n > 0 && dec.distance_rule;
    json_t *cands = json_array();
    for (size_t j = 0; j < n && j < (size_t)top_k; j++) {
        float sc = j == 0 ? dec.score : by_distance ? -d[j] : fv_openset_score(d, n, j);
        json_array_append_new(cands,
                              json_pack("{s:I, s:s, s:f, s:f, s:i}", "id", (json_int_t)f[j].s->id,
                                        "name", f[j].name, "distance", (double)f[j].d, "score",
                                        (double)sc, "templates", f[j].s->count));
    }
    json_t *match = json_null();
    if (n > 0 && dec.match)
        match = json_pack("{s:I, s:s, s:f, s:f, s:f, s:i}", "id", (json_int_t)f[0].s->id, "name",
                          f[0].name, "distance", (double)f[0].d, "score", (double)dec.score,
                          "estimated_fpir", dec.estimated_fpir, "templates", f[0].s->count);
    json_t *thr = isfinite(dec.threshold) ? json_real(dec.threshold) : json_null();
    return json_pack("{s:o, s:o, s:I, s:s, s:{s:f, s:o, s:I}}", "candidates", cands, "match", match,
                     "templates", (json_int_t)total, "decision", "open_set", "operating_point",
                     "fpir", fpir, "score_threshold", thr, "gallery_size", (json_int_t)gallery);
}

/* The subjects of the nearest templates in order (n of them), their fused
 * templates' distances to q, ascending, into f; *nf: how many.  e->mu
 * held. */
static int fused_rank(fvs_index *ix, entry *e, const float *q, const ranked *order, size_t n,
                      fused_hit *f, size_t *nf, char *err, size_t errlen) {
    *nf = 0;
    for (size_t i = 0; i < n; i++) {
        int seen = 0;
        for (size_t c = 0; c < *nf && !seen; c++) seen = f[c].s->id == order[i].subject;
        if (seen) continue;
        int found;
        size_t at = subj_find(e, order[i].subject, &found);
        if (!found) continue;
        if (subj_refresh(ix, e, &e->sj[at], err, errlen)) return -1;
        float d = fused_distance(&e->sj[at], q);
        if (isfinite(d)) f[(*nf)++] = (fused_hit){d, &e->sj[at], order[i].name};
    }
    qsort(f, *nf, sizeof *f, fused_cmp);
    return 0;
}

json_t *fvs_unreadable_warning(const int64_t *faces, size_t n, const char *why) {
    json_t *ids = json_array();
    for (size_t i = 0; i < n && i < FVS_UNREADABLE_IDS_MAX; i++)
        json_array_append_new(ids, json_integer((json_int_t)faces[i]));
    return json_pack("{s:s, s:s, s:I, s:o}", "code", "unreadable_templates", "message",
                     why && *why ? why : FVS_TKEY_ERROR "stored templates do not decrypt", "count",
                     (json_int_t)n, "face_ids", ids);
}

/* One subject excluded from one query's answer by a correction. */
typedef struct excluded {
    int64_t subject;
    const char *name;
    float near; /* its nearest template's distance */
    fvs_correction_hit hit;
} excluded;

/* Drops from order (n templates, nearest first) every template of the
 * subjects that their corrections (read now from the store) exclude for
 * probe q; those subjects go into x (*nx of them, at most HEAD).  *kept:
 * the templates left.  -1 with a database error in err.  e->mu held. */
static int exclude_subjects(fvs_index *ix, const fvs_collection *coll, fvs_correction_opts *co,
                            const float *q, ranked *order, size_t n, excluded *x, size_t *nx,
                            size_t *kept, char *err, size_t errlen) {
    *nx = 0;
    *kept = n;
    if (!co || n == 0) return 0;
    int64_t subjects[HEAD] = {0};
    size_t ns = 0;
    for (size_t i = 0; i < n && ns < HEAD; i++) {
        int seen = 0;
        for (size_t j = 0; j < ns && !seen; j++) seen = subjects[j] == order[i].subject;
        if (!seen) subjects[ns++] = order[i].subject;
    }
    fvs_correction_set *set = NULL;
    size_t bad = 0;
    char why[sizeof co->why] = "";
    if (fvs_corrections_load(ix->st, coll, subjects, ns, co->radius, &set, &bad, why, sizeof why,
                             err, errlen))
        return -1;
    if (bad > co->unreadable) {
        co->unreadable = bad;
        snprintf(co->why, sizeof co->why, "%s", why);
    }
    if (!set) return 0;
    size_t left = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t sid = order[i].subject;
        int first = 1, drop = 0;
        for (size_t j = 0; j < i && first; j++) first = order[j].subject != sid;
        for (size_t c = 0; c < *nx && !drop; c++) drop = x[c].subject == sid;
        fvs_correction_hit h;
        if (first && fvs_corrections_exclude(set, sid, q, order[i].d, &h)) {
            x[(*nx)++] = (excluded){sid, order[i].name, order[i].d, h};
            drop = 1;
        }
        if (!drop) order[left++] = order[i];
    }
    fvs_corrections_free(set);
    *kept = left;
    return 0;
}

/* Adds the excluded subjects to one query's answer: a candidate each,
 * placed by distance (open set: to its fused template), marked
 * "excluded": "correction".  e->mu held. */
static int add_excluded(fvs_index *ix, entry *e, const float *q, const excluded *x, size_t nx,
                        int fused, json_t *one, char *err, size_t errlen) {
    json_t *cands = json_object_get(one, "candidates");
    for (size_t i = 0; i < nx; i++) {
        float d = x[i].near;
        int found = 0;
        size_t at = fused ? subj_find(e, x[i].subject, &found) : 0;
        if (found && subj_refresh(ix, e, &e->sj[at], err, errlen)) return -1;
        if (found && isfinite(fused_distance(&e->sj[at], q))) d = fused_distance(&e->sj[at], q);
        json_t *c =
            json_pack("{s:I, s:s, s:f, s:s, s:I, s:f}", "id", (json_int_t)x[i].subject, "name",
                      x[i].name, "distance", (double)d, "excluded", "correction", "correction_id",
                      (json_int_t)x[i].hit.id, "correction_distance", (double)x[i].hit.distance);
        size_t pos = 0;
        while (pos < json_array_size(cands) &&
               json_real_value(json_object_get(json_array_get(cands, pos), "distance")) <= d)
            pos++;
        if (!c || json_array_insert_new(cands, pos, c)) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

int fvs_index_search(fvs_index *ix, const fvs_collection *coll, const float *queries, size_t nq,
                     float threshold, int top_k, int k, double fpir, json_t **out, json_t **warning,
                     char *err, size_t errlen) {
    return fvs_index_search_corrected(ix, coll, queries, nq, threshold, top_k, k, fpir, NULL, out,
                                      warning, err, errlen);
}

int fvs_index_search_corrected(fvs_index *ix, const fvs_collection *coll, const float *queries,
                               size_t nq, float threshold, int top_k, int k, double fpir,
                               fvs_correction_opts *co, json_t **out, json_t **warning, char *err,
                               size_t errlen) {
    *warning = NULL;
    entry *e = get_entry(ix, coll->id, coll->model);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    fvsearch_hit *hits = malloc(HEAD * sizeof *hits);
    ranked *order = malloc(HEAD * sizeof *order);
    fused_hit *f = malloc(HEAD * sizeof *f);
    excluded *x = co ? malloc(HEAD * sizeof *x) : NULL;
    if (!hits || !order || !f || (co && !x)) {
        free(hits);
        free(order);
        free(f);
        free(x);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_lock(&e->mu);
    int rc = refresh(ix, e, backend_of(ix, coll->index_backend), !ix->cfg.sync_notify, err, errlen);
    if (!rc && e->nbad && fvsearch_count(e->s) == 0) {
        /* Nothing readable at all (no key, or all under another key): no
         * answer would mean anything. */
        snprintf(err, errlen, "%s", e->bad_why[0] ? e->bad_why : FVS_TKEY_ERROR "unreadable");
        rc = -1;
    } else if (!rc && e->nbad) {
        *warning = fvs_unreadable_warning(e->bad, e->nbad, e->bad_why);
    }
    json_t *arr = json_array();
    for (size_t q = 0; !rc && q < nq; q++) {
        const float *probe = queries + q * FV_EMBED_DIM;
        size_t nh = 0, n = 0, nx = 0;
        rc = fvsearch_query(e->s, probe, HEAD, hits, &nh, err, errlen);
        for (size_t i = 0; !rc && i < nh; i++) {
            int found;
            size_t at = meta_find(e, hits[i].id, &found);
            if (!found) continue;
            order[n++] = (ranked){hits[i].distance, e->m[at].subject, e->m[at].name};
        }
        if (!rc) rc = exclude_subjects(ix, coll, co, probe, order, n, x, &nx, &n, err, errlen);
        json_t *one = NULL;
        size_t nf = 0;
        if (!rc && fpir > 0) {
            rc = fused_rank(ix, e, probe, order, n, f, &nf, err, errlen);
            if (!rc)
                one = openset_one(coll->model, f, nf, e->gallery, fvsearch_count(e->s), fpir, top_k,
                                  err, errlen);
            if (!rc && !one) rc = -1;
        } else if (!rc) {
            one = rank_one(order, n, fvsearch_count(e->s), threshold, top_k, k);
        }
        if (!rc && nx) rc = add_excluded(ix, e, probe, x, nx, fpir > 0, one, err, errlen);
        if (!rc)
            json_array_append_new(arr, one);
        else
            json_decref(one);
    }
    pthread_mutex_unlock(&e->mu);
    free(hits);
    free(order);
    free(f);
    free(x);
    if (rc) {
        json_decref(arr);
        json_decref(*warning);
        *warning = NULL;
        return -1;
    }
    *out = arr;
    return 0;
}
