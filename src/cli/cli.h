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
    const char *pos[CLI_MAX_POS];
    int npos;
} cli_opts;

int cli_exit_code(fv_status st);
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
fv_status cli_engine(const cli_opts *o, fv_engine **eng);
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

int cli_eval_pairs(cli_opts *o);
/* faceverify train (train.c): argv after the command name. */
int cli_train(int argc, char **argv);
int cli_eval_lfw(cli_opts *o);

#endif
