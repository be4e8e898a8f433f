/*
 * cli.h: what the faceverify CLI's command files share: parsed options,
 * the status -> exit code table, engine and image loading with messages,
 * and JSON helpers.
 */
#ifndef CLI_H
#define CLI_H

#include <jansson.h>

#include "faceverify.h"

enum { CLI_EXIT_OK = 0, CLI_EXIT_DIFFERENT = 1, CLI_EXIT_INPUT = 2, CLI_EXIT_FAILURE = 3 };

#define CLI_MAX_POS 8

/* What --flip selects (chosen on LFW View 1, pairsDevTrain.txt). */
#define CLI_FLIP_DEFAULT FV_FLIP_MEAN

typedef struct cli_opts {
    fv_config cfg;
    fv_verify_options verify;
    int json;
    const char *pairs, *root;
    const char *model;           /* --model PATH: a trained model instead of the ResNet */
    const char *dump;            /* eval: per-pair CSV (fold, same, distance, ...) */
    const char *dump_embeddings; /* eval: per-image CSV (path, status, 128 floats) */
    const char *dump_quality;    /* eval: per-image CSV of fv_quality */
    int jobs;                    /* eval: images processed at once (threads) */
    const char *embeddings_from; /* eval: reuse a --dump-embeddings file */
    int gallery, templates;      /* eval-openset: subjects enrolled, images per subject */
    int max_probes;              /* eval-openset: probes per person (0: all) */
    unsigned long long seed;     /* eval-openset: the draw */
    double fpir;                 /* eval-openset: the operating point (0: default) */
    int min_cluster_size;        /* cluster: smaller clusters are noise (0: default) */
    const char *pos[CLI_MAX_POS];
    int npos;
} cli_opts;

int cli_exit_code(fv_status st);
/* 1 when a file name (not starting with '.') ends in the extension of a
 * format the library decodes (any case): how the folder-walking commands
 * (eval-openset, train) pick photos.  The library itself sniffs content. */
int cli_is_image_name(const char *name);
/* Reports a failure once: "faceverify: MESSAGE" on stderr and, when o->json
 * is set (o may be NULL), the HTTP API's error object {"error": {"code":
 * fv_status_name(st), "message": MESSAGE}} as the one line on stdout, so a
 * script reading --json output always gets JSON.  Returns st. */
fv_status cli_error(const cli_opts *o, fv_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The id of the embedding space this run embeds into, written to buf: the
 * model's id (FV_MODEL_ID for the engine's ResNet, or --model's), plus
 * "+flip_mean" / "+flip_unit" under --flip, since averaging with the mirror
 * moves every embedding and has its own threshold.  embed and verify --json
 * report it as "model", so compare (fv_compare's id check) and the server
 * (whose embeddings are never flipped) refuse flipped against plain.  An
 * adapter gets the suffix (it runs on the flipped ResNet embedding); a
 * scratch model does not, since it embeds the chip alone whatever --flip
 * says.  Returns buf. */
const char *cli_model_id(const cli_opts *o, const fv_model *m, char *buf, size_t cap);
/* Parses options after the command name; prints a message and returns -1
 * on a bad option. */
int cli_parse_common(int argc, char **argv, cli_opts *o);
/* Creates the engine, printing the reason on failure. */
fv_status cli_engine(cli_opts *o, fv_engine **eng);
/* Loads an image, printing the reason on failure; *ms: decode time. */
fv_status cli_load(const cli_opts *o, const char *path, fv_image **img, double *ms);
/* A face as the API's Face object: box {left, top, right, bottom}, score,
 * landmarks [[x, y] x 5].  The caller owns the result. */
json_t *cli_face_json(const fv_face *f);
/* A face's quality as the API's Quality object: score, reasons, factors. */
json_t *cli_quality_json(const fv_quality *q);
/* Monotonic clock in milliseconds, for the timings the CLI prints. */
double cli_now_ms(void);
/* Prints j compactly on one line and releases it. */
void cli_print_json(json_t *j);

/* Loads --model if given (*m stays NULL otherwise), printing the reason on
 * failure. */
fv_status cli_model(const cli_opts *o, fv_model **m);

/* A pairs file: CSV (path_a,path_b,same) or LFW's pairs format. */
typedef struct cli_pair {
    char *a, *b;
    int same;
    int fold;   /* -1: the file has no fold structure */
    int ia, ib; /* indices into a distinct image table */
} cli_pair;
typedef struct cli_pair_list {
    cli_pair *v;
    size_t n, cap;
    int folds, fold_size; /* from an "F N" header: F folds of 2N pairs */
} cli_pair_list;
/* Reads either pairs format into l (eval.c); prints the offending line on
 * error and returns -1.  The caller frees v[i].a, v[i].b and v. */
int cli_read_pairs(const char *file, cli_pair_list *l);

/* One image of an evaluation, embedded once (eval.c). */
typedef struct cli_image {
    char *path;            /* relative to --root; owned by the set's caller */
    fv_status st;          /* the detector's outcome */
    fv_status fallback_st; /* when st is FV_E_NO_FACE: the centre crop's */
    int cached;            /* --embeddings-from supplied emb (quality unknown) */
    float emb[FV_EMBED_DIM];
    float fallback[FV_EMBED_DIM];
    fv_quality quality; /* of the detector's face (st FV_OK, not cached) */
} cli_image;

/* The distinct images an evaluation embeds, with the engine that did it:
 * eval-pairs, eval-lfw and eval-openset share this one path (list, cache,
 * worker threads, dumps). */
typedef struct cli_image_set {
    char **names; /* sorted distinct paths (caller's strings); owned array */
    cli_image *imgs;
    size_t nimg;
    fv_engine *eng;
    fv_model *model; /* --model: a trained model instead of the ResNet */
    double elapsed_ms;
    long cached; /* images taken from --embeddings-from */
} cli_image_set;

/* Takes names (n paths, any order, duplicates allowed; the array becomes
 * the set's, the strings stay the caller's and must outlive the set),
 * sorts and de-duplicates them, then embeds each distinct image once under
 * --root with --jobs threads, taking --embeddings-from's rows first (and
 * the centre-crop fallback for images without a face when fallback is
 * set).  Returns an exit code; s is filled (free with cli_images_free)
 * either way. */
int cli_images_embed(cli_opts *o, char **names, size_t n, int fallback, cli_image_set *s);
void cli_images_free(cli_image_set *s);
/* Index of path in s, or -1. */
int cli_images_find(const cli_image_set *s, const char *path);
/* The embedding an image is scored with: the detector's, else (when
 * use_fallback) the centre crop's, else NULL. */
const float *cli_image_embedding(const cli_image *im, int use_fallback);
/* Wall time per image actually computed (not taken from a file). */
double cli_images_ms_per_image(const cli_image_set *s);
/* --dump-embeddings and --dump-quality of a set; -1 (with a message) when
 * the file cannot be written. */
int cli_images_dump_embeddings(const char *file, const cli_image_set *s, int use_fallback);
int cli_images_dump_quality(const char *file, const cli_image_set *s);
/* The quality of a pair: the mean of its faces' fv_quality scores, an
 * image whose quality is unknown (taken from --embeddings-from) counting
 * as 1, as fv_fmr_threshold asks for unknown qualities. */
float cli_pair_quality(const cli_image *a, const cli_image *b);

int cli_eval_pairs(cli_opts *o);
/* faceverify train (train.c): argv after the command name. */
int cli_train(int argc, char **argv);
int cli_eval_lfw(cli_opts *o);
/* faceverify eval-openset (openset.c). */
int cli_eval_openset(cli_opts *o);
/* faceverify cluster DIR (cluster.c). */
int cli_cluster(cli_opts *o);

#endif
