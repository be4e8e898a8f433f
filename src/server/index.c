/*
 * index.c: exact k-NN over a per-collection template matrix (see index.h).
 *
 * Distances come from one cblas_sgemm per request (queries x templates,
 * ||q||^2 + ||t||^2 - 2 q.t); the distances that are reported are then
 * recomputed exactly with fv_distance so that they match /verify.  BLAS is
 * single-threaded (the library pins OpenBLAS to one thread and
 * parallelises with its own pool), and requests run on the HTTP pool's
 * threads, so searches in different collections run in parallel and
 * searches in one collection are serialised by that collection's mutex.
 */
#include "index.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    int64_t coll;
    int64_t version; /* -1: never loaded */
    size_t n, cap;
    float *mat; /* n x FV_EMBED_DIM */
    float *norms;
    int64_t *face_ids, *subject_ids;
    char **names;
    pthread_mutex_t mu;
    struct entry *next;
} entry;

struct fvs_index {
    fvs_store *st;
    pthread_mutex_t mu; /* guards the list only */
    entry *head;
};

fvs_index *fvs_index_create(fvs_store *st) {
    fvs_index *ix = calloc(1, sizeof *ix);
    if (!ix) return NULL;
    ix->st = st;
    pthread_mutex_init(&ix->mu, NULL);
    return ix;
}

static void entry_clear(entry *e) {
    for (size_t i = 0; i < e->n; i++) free(e->names[i]);
    e->n = 0;
}

void fvs_index_destroy(fvs_index *ix) {
    if (!ix) return;
    entry *e = ix->head;
    while (e) {
        entry *next = e->next;
        entry_clear(e);
        free(e->mat);
        free(e->norms);
        free(e->face_ids);
        free(e->subject_ids);
        free(e->names);
        pthread_mutex_destroy(&e->mu);
        free(e);
        e = next;
    }
    pthread_mutex_destroy(&ix->mu);
    free(ix);
}

static entry *get_entry(fvs_index *ix, int64_t coll) {
    pthread_mutex_lock(&ix->mu);
    entry *e = ix->head;
    while (e && e->coll != coll) e = e->next;
    if (!e) {
        e = calloc(1, sizeof *e);
        if (e) {
            e->coll = coll;
            e->version = -1;
            pthread_mutex_init(&e->mu, NULL);
            e->next = ix->head;
            ix->head = e;
        }
    }
    pthread_mutex_unlock(&ix->mu);
    return e;
}

static int grow(entry *e) {
    size_t cap = e->cap ? e->cap * 2 : 256;
    if (cap > SIZE_MAX / (FV_EMBED_DIM * sizeof(float))) return 1;
    float *mat = realloc(e->mat, cap * FV_EMBED_DIM * sizeof(float));
    if (!mat) return 1;
    e->mat = mat;
    float *norms = realloc(e->norms, cap * sizeof(float));
    if (!norms) return 1;
    e->norms = norms;
    int64_t *f = realloc(e->face_ids, cap * sizeof(int64_t));
    if (!f) return 1;
    e->face_ids = f;
    int64_t *s = realloc(e->subject_ids, cap * sizeof(int64_t));
    if (!s) return 1;
    e->subject_ids = s;
    char **nm = realloc(e->names, cap * sizeof(char *));
    if (!nm) return 1;
    e->names = nm;
    e->cap = cap;
    return 0;
}

static int add_template(void *ctx, int64_t face_id, int64_t subject_id, const char *name,
                        const float *emb) {
    entry *e = ctx;
    if (e->n == e->cap && grow(e)) return 1;
    char *nm = strdup(name);
    if (!nm) return 1;
    float *row = e->mat + e->n * FV_EMBED_DIM;
    memcpy(row, emb, FV_EMBED_DIM * sizeof(float));
    double s = 0;
    for (int i = 0; i < FV_EMBED_DIM; i++) s += (double)row[i] * row[i];
    e->norms[e->n] = (float)s;
    e->face_ids[e->n] = face_id;
    e->subject_ids[e->n] = subject_id;
    e->names[e->n] = nm;
    e->n++;
    return 0;
}

/* Reloads e when the stored version moved; e->mu held. */
static int refresh(fvs_index *ix, entry *e, char *err, size_t errlen) {
    int64_t version = 0;
    if (fvs_collection_version(ix->st, e->coll, &version, err, errlen)) return -1;
    if (version == e->version) return 0;
    entry_clear(e);
    e->version = -1;
    if (fvs_templates(ix->st, e->coll, 0, FV_MODEL_ID, add_template, e, err, errlen)) {
        entry_clear(e);
        return -1;
    }
    e->version = version;
    return 0;
}

typedef struct ranked {
    float d;
    size_t i;
} ranked;

static int cmp_ranked(const void *a, const void *b) {
    const ranked *x = a, *y = b;
    if (x->d < y->d) return -1;
    if (x->d > y->d) return 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Ranks one query against the n templates, with dist[] its approximate
 * distances. */
static json_t *rank_one(const entry *e, const float *q, const float *dots, float qnorm,
                        float threshold, int top_k, int k, ranked *order) {
    size_t n = e->n;
    for (size_t i = 0; i < n; i++) {
        float d2 = qnorm + e->norms[i] - 2.0f * dots[i];
        order[i].d = d2 > 0 ? sqrtf(d2) : 0;
        order[i].i = i;
    }
    qsort(order, n, sizeof *order, cmp_ranked);
    /* Exact distances for the head of the ranking, then re-sort it: the
     * expansion above can swap near-ties. */
    size_t head = n < 128 ? n : 128; /* >= k and top_k (both <= 100) */
    for (size_t j = 0; j < head; j++)
        order[j].d = fv_distance(q, e->mat + order[j].i * FV_EMBED_DIM);
    qsort(order, head, sizeof *order, cmp_ranked);

    /* The vote: among the k nearest templates within threshold, the
     * subject with most; a tie goes to the subject seen first, i.e. the
     * one with the nearer template.  Independent of top_k. */
    size_t kk = (size_t)k < n ? (size_t)k : n;
    int64_t best_subject = 0;
    int best_votes = 0;
    float best_dist = 0;
    size_t best_row = 0;
    for (size_t c = 0; c < kk && order[c].d <= threshold; c++) {
        int64_t sid = e->subject_ids[order[c].i];
        int votes = 0;
        for (size_t d = 0; d < kk && order[d].d <= threshold; d++)
            votes += e->subject_ids[order[d].i] == sid;
        if (votes > best_votes) {
            best_votes = votes;
            best_subject = sid;
            best_dist = order[c].d;
            best_row = order[c].i;
        }
    }
    /* Candidates: subjects in order of their nearest template. */
    json_t *cands = json_array();
    int64_t added[FVS_TOP_K_MAX];
    size_t nadded = 0;
    if (top_k > FVS_TOP_K_MAX) top_k = FVS_TOP_K_MAX;
    for (size_t j = 0; j < n && nadded < (size_t)top_k; j++) {
        size_t row = order[j].i;
        int64_t sid = e->subject_ids[row];
        int seen = 0;
        for (size_t c = 0; c < nadded && !seen; c++) seen = added[c] == sid;
        if (seen) continue;
        added[nadded++] = sid;
        int votes = 0;
        for (size_t c = 0; c < kk && order[c].d <= threshold; c++)
            votes += e->subject_ids[order[c].i] == sid;
        float d = order[j].d;
        json_array_append_new(cands,
                              json_pack("{s:I, s:s, s:f, s:f, s:i}", "id", (json_int_t)sid, "name",
                                        e->names[row], "distance", (double)d, "similarity",
                                        (double)fv_similarity(d, threshold), "votes", votes));
    }
    json_t *match = json_null();
    if (best_votes > 0)
        match = json_pack("{s:I, s:s, s:f, s:f, s:i}", "id", (json_int_t)best_subject, "name",
                          e->names[best_row], "distance", (double)best_dist, "similarity",
                          (double)fv_similarity(best_dist, threshold), "votes", best_votes);
    return json_pack("{s:o, s:o, s:I}", "candidates", cands, "match", match, "templates",
                     (json_int_t)n);
}

int fvs_index_search(fvs_index *ix, int64_t coll, const float *queries, size_t nq, float threshold,
                     int top_k, int k, json_t **out, char *err, size_t errlen) {
    entry *e = get_entry(ix, coll);
    if (!e) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    pthread_mutex_lock(&e->mu);
    int rc = refresh(ix, e, err, errlen);
    float *dots = NULL;
    ranked *order = NULL;
    if (!rc && e->n > 0 && nq > 0) {
        dots = malloc(nq * e->n * sizeof(float));
        order = malloc(e->n * sizeof(ranked));
        if (!dots || !order) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)e->n, FV_EMBED_DIM,
                        1.0f, queries, FV_EMBED_DIM, e->mat, FV_EMBED_DIM, 0.0f, dots, (int)e->n);
        }
    }
    json_t *arr = json_array();
    for (size_t q = 0; !rc && q < nq; q++) {
        const float *qv = queries + q * FV_EMBED_DIM;
        if (e->n == 0) {
            json_array_append_new(
                arr, json_pack("{s:[], s:n, s:i}", "candidates", "match", "templates", 0));
            continue;
        }
        float qn = 0;
        for (int i = 0; i < FV_EMBED_DIM; i++) qn += qv[i] * qv[i];
        json_array_append_new(arr,
                              rank_one(e, qv, dots + q * e->n, qn, threshold, top_k, k, order));
    }
    pthread_mutex_unlock(&e->mu);
    free(dots);
    free(order);
    if (rc) {
        json_decref(arr);
        return -1;
    }
    *out = arr;
    return 0;
}
