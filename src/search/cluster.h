/*
 * cluster.h: groups face embeddings into people without labels ("who is
 * in these photos?"), for `faceverify cluster` and POST
 * /api/v1/faces/cluster.
 *
 * Method (measured in bench/cluster_lfw.py, docs/benchmarks.md): every
 * face asks a search index (search.h, exact answers) for its k nearest
 * faces; the pairs closer than the link distance are the edges of a
 * sparse graph (at most n * k of them, never an n x n matrix); Chinese
 * whispers (label propagation, dlib's choice) then groups the graph: each
 * face in turn takes the label that carries the most edge weight among its
 * neighbours, a closer neighbour weighing more, until no label changes.
 * Unlike linking every connected pair (single linkage), one stray
 * impostor edge cannot pour a whole person into another: a face follows
 * the majority of its neighbours.
 *
 * Strictness is in the user's terms: a false-match rate, mapped to the
 * link distance with the library's calibration (fv_fmr_threshold, pair
 * quality 1), and a minimum cluster size below which faces are noise.
 *
 * Deterministic: the same embeddings in the same order give the same
 * labels whatever the thread count (exact neighbours with ties to the
 * smaller index, a fixed visiting order, ties to the smaller label).
 *
 * Thread-safety: fvsearch_cluster uses only its arguments; calls may run
 * concurrently.
 */
#ifndef FVSEARCH_CLUSTER_H
#define FVSEARCH_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

/* The default strictness: three false links in 100,000 impostor pairs
 * (link distance 0.435 for dlib_resnet_v1), the loosest setting measured
 * with pairwise precision >= 0.98 on LFW (bench/cluster_lfw.py,
 * docs/benchmarks.md): clustering makes n^2/2 pairs, so it needs a much
 * stricter rate than one verification. */
#define FVSEARCH_CLUSTER_DEFAULT_FMR 3e-5
#define FVSEARCH_CLUSTER_DEFAULT_MIN_SIZE 2
#define FVSEARCH_CLUSTER_DEFAULT_K 32
/* Most neighbours a face may ask for (the graph holds n * k edges). */
#define FVSEARCH_CLUSTER_MAX_K 256
/* Most faces one call clusters (labels are int32; the graph's memory,
 * about n * k * 16 bytes, stays a few hundred MB). */
#define FVSEARCH_CLUSTER_MAX_N 2000000

typedef enum fvsearch_cluster_method {
    FVSEARCH_CLUSTER_WHISPERS = 0, /* Chinese whispers (the default) */
    FVSEARCH_CLUSTER_COMPONENTS,   /* connected components (single linkage),
                                      kept for the benchmark's comparison */
    FVSEARCH_CLUSTER_METHODS
} fvsearch_cluster_method;

typedef struct fvsearch_cluster_opts {
    /* Strictness: faces link when closer than the distance at this
     * false-match rate (FV_FMR_MIN..FV_FMR_MAX).  0: the default. */
    double fmr;
    /* > 0: the link distance itself (fmr is then only reported, not used). */
    float threshold;
    /* Clusters with fewer faces are noise (>= 1; 0: the default 2). */
    size_t min_cluster_size;
    /* Neighbours per face (1..FVSEARCH_CLUSTER_MAX_K; 0: the default). */
    size_t k;
    /* Threads for the neighbour queries (>= 1; 0: 1). */
    int threads;
    fvsearch_cluster_method method;
    /* The calibration's model (NULL: FV_MODEL_ID). */
    const char *model_id;
} fvsearch_cluster_opts;

/* o filled with the defaults above. */
void fvsearch_cluster_opts_init(fvsearch_cluster_opts *o);

/* "chinese-whispers" / "components". */
const char *fvsearch_cluster_method_name(fvsearch_cluster_method m);

/* The link distance o asks for (its threshold, else fv_fmr_threshold of
 * its fmr at pair quality 1).  0 or -1 with a message in err: fmr out of
 * range or a model without calibration. */
int fvsearch_cluster_threshold(const fvsearch_cluster_opts *o, float *threshold, char *err,
                               size_t errlen);

/* Clusters the n embeddings emb (n x FV_EMBED_DIM floats, row i is face
 * i; non-finite values are the caller's to refuse).  label (caller-owned,
 * n entries) receives each face's cluster, -1 for noise; clusters are
 * numbered by size, 0 the largest (ties: the one whose first face comes
 * first).  *n_clusters receives their number.  n == 0 is valid (no
 * clusters).  0 on success; -1 with a message in err for bad options
 * (NULL pointers, fmr/k/min_cluster_size/threads out of range, n above
 * FVSEARCH_CLUSTER_MAX_N) or when memory runs out. */
int fvsearch_cluster(const float *emb, size_t n, const fvsearch_cluster_opts *o, int32_t *label,
                     size_t *n_clusters, char *err, size_t errlen);

#endif
