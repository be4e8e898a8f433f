/*
 * cluster.c: the clustering of cluster.h.
 *
 * Three steps, each linear in n * k:
 *   1. neighbours: the faces go into an exact float32 index and every
 *      face asks it for its k + 1 nearest (itself among them), in batches
 *      (fvsearch_query_many: matrix products over the stored rows) split
 *      over the worker threads by face;
 *   2. graph: the neighbours closer than the link distance become edges,
 *      made symmetric (a face is linked to those it found and to those that
 *      found it) and stored as compressed rows (CSR);
 *   3. grouping: Chinese whispers over the graph (or connected components
 *      for the comparison), then clusters below the minimum size become
 *      noise and the rest are numbered largest first.
 *
 * Chinese whispers here is deterministic: faces are visited in one fixed
 * pseudo-random order (a seeded shuffle: visiting in input order would let
 * the folder order steer the result), each pass updates labels in place,
 * and a face takes the label with the largest summed weight among its
 * neighbours, ties going to the smaller label.  An edge of distance d
 * weighs 1 - d / t (t the link distance), so a near neighbour outvotes a
 * borderline one.  It stops when a pass changes nothing, or after
 * MAX_PASSES.
 */
#include "search/cluster.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fvi.h"
#include "core/workers.h"
#include "faceverify.h"
#include "search/search.h"

#define DIM FV_EMBED_DIM
#define MAX_PASSES 100

void fvsearch_cluster_opts_init(fvsearch_cluster_opts *o) {
    memset(o, 0, sizeof *o);
    o->fmr = FVSEARCH_CLUSTER_DEFAULT_FMR;
    o->min_cluster_size = FVSEARCH_CLUSTER_DEFAULT_MIN_SIZE;
    o->k = FVSEARCH_CLUSTER_DEFAULT_K;
    o->threads = 1;
    o->method = FVSEARCH_CLUSTER_WHISPERS;
}

const char *fvsearch_cluster_method_name(fvsearch_cluster_method m) {
    return m == FVSEARCH_CLUSTER_COMPONENTS ? "components" : "chinese-whispers";
}

int fvsearch_cluster_threshold(const fvsearch_cluster_opts *o, float *threshold, char *err,
                               size_t errlen) {
    if (!o || !threshold) {
        fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "cluster: NULL argument");
        return -1;
    }
    if (o->threshold != 0) { /* NaN included */
        if (!(o->threshold > 0 && o->threshold <= 4.0f)) {
            fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT,
                       "cluster: threshold must be a distance in (0, 4]");
            return -1;
        }
        *threshold = o->threshold;
        return 0;
    }
    double fmr = o->fmr > 0 ? o->fmr : FVSEARCH_CLUSTER_DEFAULT_FMR;
    if (!(fmr >= FV_FMR_MIN && fmr <= FV_FMR_MAX)) {
        fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "fmr must be in [%g, %g]", FV_FMR_MIN,
                   FV_FMR_MAX);
        return -1;
    }
    fv_status st = fv_fmr_threshold(o->model_id, fmr, 1.0f, threshold);
    if (st != FV_OK) {
        fvi_seterr(err, errlen, st, "cluster: no link distance for fmr %g: %s", fmr,
                   fv_strerror(st));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ neighbours */

/* Queries per fvsearch_query_many call of one worker. */
#define QUERY_BATCH 256

typedef struct knn_job {
    fvsearch *index;
    const float *emb;
    size_t k; /* neighbours kept per face */
    float t;
    int32_t *nb;        /* n x k: neighbour index, -1 for none */
    float *nd;          /* n x k: its distance */
    fvsearch_hit *hits; /* workers x QUERY_BATCH x (k + 1) */
    size_t *nhits;      /* workers x QUERY_BATCH */
    int failed;         /* set (only ever to 1) by a failing query */
} knn_job;

static void knn_task(void *ctx, int begin, int end, int worker) {
    knn_job *j = ctx;
    size_t kq = j->k + 1;
    fvsearch_hit *hits = j->hits + (size_t)worker * QUERY_BATCH * kq;
    size_t *nhits = j->nhits + (size_t)worker * QUERY_BATCH;
    for (size_t q0 = (size_t)begin; q0 < (size_t)end; q0 += QUERY_BATCH) {
        size_t mq = (size_t)end - q0 < QUERY_BATCH ? (size_t)end - q0 : QUERY_BATCH;
        if (fvsearch_query_many(j->index, mq, j->emb + q0 * DIM, kq, hits, nhits, NULL, 0)) {
            __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
            for (size_t a = 0; a < mq; a++) nhits[a] = 0;
        }
        for (size_t a = 0; a < mq; a++) {
            size_t i = q0 + a, kept = 0;
            int32_t *nb = j->nb + i * j->k;
            float *nd = j->nd + i * j->k;
            const fvsearch_hit *h = hits + a * kq;
            for (size_t b = 0; b < nhits[a] && kept < j->k; b++) {
                if (h[b].id == (int64_t)i || !(h[b].distance < j->t)) continue;
                nb[kept] = (int32_t)h[b].id;
                nd[kept++] = h[b].distance;
            }
            for (; kept < j->k; kept++) nb[kept] = -1;
        }
    }
}

/* Fills nb/nd (n x k) with each face's neighbours closer than t, from an
 * exact index (fvsearch_query_many: batched, so all-against-all costs
 * matrix products, not n scans). */
static int find_neighbours(const float *emb, size_t n, size_t k, float t, int threads, int32_t *nb,
                           float *nd, char *err, size_t errlen) {
    char why[256] = "";
    fvsearch *index = fvsearch_create(FVSEARCH_EXACT, why, sizeof why);
    int64_t *ids = fvi_malloc(n * sizeof *ids);
    fvi_workers *pool = threads > 1 ? fvi_workers_create(threads) : NULL;
    size_t nw = (size_t)(threads > 1 ? threads : 1);
    knn_job j = {index, emb, k, t, nb, nd, NULL, NULL, 0};
    int rc = -1;
    if (index && ids && (threads <= 1 || pool)) {
        j.hits = fvi_malloc(nw * QUERY_BATCH * (k + 1) * sizeof *j.hits);
        j.nhits = fvi_malloc(nw * QUERY_BATCH * sizeof *j.nhits);
        for (size_t i = 0; i < n; i++) ids[i] = (int64_t)i;
        if (j.hits && j.nhits && fvsearch_add(index, n, ids, emb, why, sizeof why) == 0) {
            fvi_workers_run(pool, (int)n, QUERY_BATCH, knn_task, &j);
            rc = j.failed ? -1 : 0;
        }
    }
    if (rc)
        fvi_seterr(err, errlen, FV_E_NO_MEMORY, "cluster: neighbour search failed%s%s",
                   why[0] ? ": " : " (out of memory)", why);
    fvi_free(j.hits);
    fvi_free(j.nhits);
    fvi_workers_destroy(pool);
    fvi_free(ids);
    fvsearch_destroy(index);
    return rc;
}

/* ------------------------------------------------------------ graph */

typedef struct graph {
    size_t *start; /* n + 1: node i's edges are [start[i], start[i+1]) */
    int32_t *to;
    float *w;
} graph;

static void graph_free(graph *g) {
    fvi_free(g->start);
    fvi_free(g->to);
    fvi_free(g->w);
    memset(g, 0, sizeof *g);
}

/* The symmetric graph of the n x k neighbour lists: an edge i-j when
 * either found the other (once, even when both did).  Node i's edges are
 * sorted by neighbour index. */
static int build_graph(size_t n, size_t k, const int32_t *nb, const float *nd, float t, graph *g) {
    memset(g, 0, sizeof *g);
    size_t *deg = fvi_calloc(n + 1, sizeof *deg);
    if (!deg) return -1;
    size_t nk = n * k; /* checked by the caller */
    for (size_t e = 0; e < nk; e++) {
        if (nb[e] < 0) continue;
        deg[e / k]++;
        deg[nb[e]]++;
    }
    g->start = fvi_malloc((n + 1) * sizeof *g->start);
    size_t total = 0;
    for (size_t i = 0; g->start && i < n; i++) {
        g->start[i] = total;
        total += deg[i]; /* <= 2 n k: no overflow */
    }
    if (g->start) g->start[n] = total;
    g->to = fvi_malloc((total ? total : 1) * sizeof *g->to);
    g->w = fvi_malloc((total ? total : 1) * sizeof *g->w);
    if (!g->start || !g->to || !g->w) {
        fvi_free(deg);
        graph_free(g);
        return -1;
    }
    /* Fill (deg reused as the fill cursor), then sort each row by
     * neighbour and drop the second copy of mutual pairs. */
    memset(deg, 0, (n + 1) * sizeof *deg);
    for (size_t e = 0; e < nk; e++) {
        if (nb[e] < 0) continue;
        size_t i = e / k, j = (size_t)nb[e];
        float w = 1.0f - nd[e] / t;
        g->to[g->start[i] + deg[i]] = (int32_t)j;
        g->w[g->start[i] + deg[i]++] = w;
        g->to[g->start[j] + deg[j]] = (int32_t)i;
        g->w[g->start[j] + deg[j]++] = w;
    }
    fvi_free(deg);
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        size_t b = g->start[i], e = g->start[i + 1];
        /* insertion sort: rows are short (about 2k) */
        for (size_t a = b + 1; a < e; a++) {
            int32_t to = g->to[a];
            float w = g->w[a];
            size_t c = a;
            for (; c > b && g->to[c - 1] > to; c--) {
                g->to[c] = g->to[c - 1];
                g->w[c] = g->w[c - 1];
            }
            g->to[c] = to;
            g->w[c] = w;
        }
        g->start[i] = out;
        for (size_t a = b; a < e; a++) {
            if (a > b && g->to[a] == g->to[a - 1]) continue;
            g->to[out] = g->to[a];
            g->w[out++] = g->w[a];
        }
    }
    g->start[n] = out;
    return 0;
}

/* ------------------------------------------------------------ grouping */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

typedef struct vote {
    int32_t label;
    float w;
} vote;

static int vote_cmp(const void *a, const void *b) {
    const vote *x = a, *y = b;
    return (x->label > y->label) - (x->label < y->label);
}

/* Chinese whispers over g; label[i] starts as i. */
static int whispers(const graph *g, size_t n, int32_t *label) {
    size_t *order = fvi_malloc((n ? n : 1) * sizeof *order);
    size_t maxdeg = 0;
    for (size_t i = 0; i < n; i++) {
        size_t d = g->start[i + 1] - g->start[i];
        if (d > maxdeg) maxdeg = d;
    }
    vote *v = fvi_malloc((maxdeg ? maxdeg : 1) * sizeof *v);
    if (!order || !v) {
        fvi_free(order);
        fvi_free(v);
        return -1;
    }
    uint64_t seed = 0x5eed;
    for (size_t i = 0; i < n; i++) order[i] = i;
    for (size_t i = n; i > 1; i--) { /* Fisher-Yates */
        size_t j = (size_t)(splitmix(&seed) % i), tmp = order[i - 1];
        order[i - 1] = order[j];
        order[j] = tmp;
    }
    for (int pass = 0; pass < MAX_PASSES; pass++) {
        size_t changed = 0;
        for (size_t o = 0; o < n; o++) {
            size_t i = order[o], b = g->start[i], d = g->start[i + 1] - b;
            if (!d) continue;
            for (size_t a = 0; a < d; a++) {
                v[a].label = label[g->to[b + a]];
                v[a].w = g->w[b + a];
            }
            qsort(v, d, sizeof *v, vote_cmp);
            int32_t best = label[i];
            float best_w = -1.0f;
            for (size_t a = 0; a < d;) {
                float sum = 0;
                size_t c = a;
                for (; c < d && v[c].label == v[a].label; c++) sum += v[c].w;
                if (sum > best_w) { /* strictly: ties keep the smaller label */
                    best_w = sum;
                    best = v[a].label;
                }
                a = c;
            }
            if (best != label[i]) {
                label[i] = best;
                changed++;
            }
        }
        if (!changed) break;
    }
    fvi_free(order);
    fvi_free(v);
    return 0;
}

static int32_t find_root(int32_t *parent, int32_t i) {
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

/* Connected components of g (union by smaller index). */
static void components(const graph *g, size_t n, int32_t *label) {
    for (size_t i = 0; i < n; i++)
        for (size_t a = g->start[i]; a < g->start[i + 1]; a++) {
            int32_t x = find_root(label, (int32_t)i), y = find_root(label, g->to[a]);
            if (x < y)
                label[y] = x;
            else if (y < x)
                label[x] = y;
        }
    for (size_t i = 0; i < n; i++) label[i] = find_root(label, (int32_t)i);
}

typedef struct group {
    size_t size, first;
    int32_t label;
} group;

static int group_cmp(const void *a, const void *b) {
    const group *x = a, *y = b;
    if (x->size != y->size) return x->size < y->size ? 1 : -1;
    return (x->first > y->first) - (x->first < y->first);
}

/* Turns raw labels (each a face index) into cluster numbers, largest
 * first, and -1 for clusters below min_size. */
static int renumber(size_t n, size_t min_size, int32_t *label, size_t *n_clusters) {
    size_t *size = fvi_calloc(n ? n : 1, sizeof *size);
    size_t *first = fvi_malloc((n ? n : 1) * sizeof *first);
    group *gs = fvi_malloc((n ? n : 1) * sizeof *gs);
    int32_t *num = fvi_malloc((n ? n : 1) * sizeof *num);
    if (!size || !first || !gs || !num) {
        fvi_free(size);
        fvi_free(first);
        fvi_free(gs);
        fvi_free(num);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        size_t l = (size_t)label[i];
        if (size[l]++ == 0) first[l] = i;
    }
    size_t m = 0;
    for (size_t l = 0; l < n; l++) {
        num[l] = -1;
        if (size[l] >= min_size && size[l] > 0) gs[m++] = (group){size[l], first[l], (int32_t)l};
    }
    qsort(gs, m, sizeof *gs, group_cmp);
    for (size_t c = 0; c < m; c++) num[gs[c].label] = (int32_t)c;
    for (size_t i = 0; i < n; i++) label[i] = num[label[i]];
    *n_clusters = m;
    fvi_free(size);
    fvi_free(first);
    fvi_free(gs);
    fvi_free(num);
    return 0;
}

/* ------------------------------------------------------------ entry */

int fvsearch_cluster(const float *emb, size_t n, const fvsearch_cluster_opts *o, int32_t *label,
                     size_t *n_clusters, char *err, size_t errlen) {
    if (!o || !n_clusters || (n && (!emb || !label))) {
        fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "cluster: NULL argument");
        return -1;
    }
    *n_clusters = 0;
    size_t k = o->k ? o->k : FVSEARCH_CLUSTER_DEFAULT_K;
    size_t min_size = o->min_cluster_size ? o->min_cluster_size : FVSEARCH_CLUSTER_DEFAULT_MIN_SIZE;
    int threads = o->threads ? o->threads : 1;
    if (k > FVSEARCH_CLUSTER_MAX_K) {
        fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "cluster: k must be in 1..%d",
                   FVSEARCH_CLUSTER_MAX_K);
        return -1;
    }
    if (threads < 1 || threads > 256) {
        fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "cluster: threads must be in 1..256");
        return -1;
    }
    if (n > FVSEARCH_CLUSTER_MAX_N) {
        fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "cluster: at most %d faces at once",
                   FVSEARCH_CLUSTER_MAX_N);
        return -1;
    }
    if ((unsigned)o->method >= FVSEARCH_CLUSTER_METHODS) {
        fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "cluster: unknown method");
        return -1;
    }
    float t;
    if (fvsearch_cluster_threshold(o, &t, err, errlen)) return -1;
    if (n == 0) return 0;
    size_t nk;
    if (fvi_size_mul(n, k, &nk) || nk > SIZE_MAX / 16) {
        fvi_seterr(err, errlen, FV_E_INVALID_ARGUMENT, "cluster: n * k too large");
        return -1;
    }
    int32_t *nb = fvi_malloc(nk * sizeof *nb);
    float *nd = fvi_malloc(nk * sizeof *nd);
    graph g = {0};
    int rc = -1;
    if (!nb || !nd) {
        fvi_seterr(err, errlen, FV_E_NO_MEMORY, "cluster: out of memory for %zu faces", n);
    } else if (find_neighbours(emb, n, k, t, threads, nb, nd, err, errlen) == 0) {
        if (build_graph(n, k, nb, nd, t, &g)) {
            fvi_seterr(err, errlen, FV_E_NO_MEMORY, "cluster: out of memory for the graph");
        } else {
            fvi_free(nb);
            fvi_free(nd);
            nb = NULL;
            nd = NULL;
            for (size_t i = 0; i < n; i++) label[i] = (int32_t)i;
            int grc = 0;
            if (o->method == FVSEARCH_CLUSTER_COMPONENTS)
                components(&g, n, label);
            else
                grc = whispers(&g, n, label);
            if (grc || renumber(n, min_size, label, n_clusters))
                fvi_seterr(err, errlen, FV_E_NO_MEMORY, "cluster: out of memory");
            else
                rc = 0;
        }
    }
    graph_free(&g);
    fvi_free(nb);
    fvi_free(nd);
    return rc;
}
