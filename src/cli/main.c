/*
 * main.c: the faceverify command-line tool.
 *
 *   faceverify verify A B [options]      is A the same person as B?
 *   faceverify detect IMG [options]      faces, boxes, scores, landmarks
 *   faceverify embed IMG [options]       128-d embedding of the face used
 *   faceverify eval-pairs --pairs F --root DIR [options]   metrics (eval.c)
 *   faceverify eval-openset --root DIR [options]   open-set identification (openset.c)
 *   faceverify compare A.json B.json     distance of two `embed --json` outputs
 *   faceverify cluster DIR [options]     group every face of every photo into people (cluster.c)
 *   faceverify train --data DIR --out MODEL [options]   (train.c)
 *
 * Exit codes (one table, cli_exit_code): 0 success / same person, 1
 * different people, 2 input or usage error (no face, unreadable, too
 * large, bad option), 3 models unavailable or an internal failure.
 * Messages go to stderr; results (text or --json) to stdout.  With --json,
 * stdout always carries one JSON document: the result, or the HTTP API's
 * error object {"error": {"code", "message"}} (cli_error).
 *
 * The --json shapes are the HTTP API's (src/server/openapi.json): a face is
 * {box: {left, top, right, bottom}, score, landmarks}, the face a result
 * used adds faces_detected, verify puts its faces under faces.a / faces.b,
 * and timings_ms (summed over both images, with a total) sits at the top.
 * A script moving from the CLI to the server reads the same keys.
 */
#include <stdarg.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cli/cli.h"

/* The one status -> exit code table of the CLI. */
int cli_is_image_name(const char *name) {
    static const char *const ext[] = {".jpg",  ".jpeg", ".png",  ".webp", ".bmp",
                                      ".heic", ".heif", ".avif", ".tif",  ".tiff",
                                      ".gif",  ".pbm",  ".pgm",  ".ppm",  ".pnm"};
    const char *dot = strrchr(name, '.');
    if (name[0] == '.' || !dot) return 0;
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
        if (!strcasecmp(dot, ext[i])) return 1;
    return 0;
}

int cli_exit_code(fv_status st) {
    switch (st) {
    case FV_OK:
        return 0;
    case FV_E_INVALID_ARGUMENT:
    case FV_E_IO:
    case FV_E_IMAGE_FORMAT:
    case FV_E_IMAGE_CORRUPT:
    case FV_E_IMAGE_TOO_LARGE:
    case FV_E_NO_FACE:
    case FV_E_MULTIPLE_FACES:
    case FV_E_UNSUPPORTED:
    case FV_E_MODEL_MISMATCH:
        return CLI_EXIT_INPUT;
    default:
        return CLI_EXIT_FAILURE;
    }
}

fv_status cli_error(const cli_opts *o, fv_status st, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "faceverify: %s\n", msg);
    if (o && o->json)
        cli_print_json(
            json_pack("{s:{s:s,s:s}}", "error", "code", fv_status_name(st), "message", msg));
    return st;
}

const char *cli_model_id(const cli_opts *o, const fv_model *m, char *buf, size_t cap) {
    const char *id = m ? fv_model_id(m) : FV_MODEL_ID;
    /* A scratch model embeds the chip alone (faceverify.h): flip does not
     * touch its space.  The ResNet and adapters on it are flipped. */
    int flipped = !(m && strcmp(fv_model_kind(m), "scratch") == 0);
    const char *suffix = !flipped                      ? ""
                         : o->cfg.flip == FV_FLIP_MEAN ? "+flip_mean"
                         : o->cfg.flip == FV_FLIP_UNIT ? "+flip_unit"
                                                       : "";
    if (flipped && o->cfg.jitters > 0)
        snprintf(buf, cap, "%s%s+jitter%d", id, suffix, o->cfg.jitters);
    else
        snprintf(buf, cap, "%s%s", id, suffix);
    return buf;
}

/* A bad option: reported like any error (so --json gets the error object),
 * and -1 for cli_parse_common's caller. */
static int bad_option(const cli_opts *o, const char *fmt, const char *arg) {
    cli_error(o, FV_E_INVALID_ARGUMENT, fmt, arg);
    return -1;
}

static void usage(FILE *f) {
    fputs("usage: faceverify COMMAND [options]\n"
          "\n"
          "commands:\n"
          "  verify A B        is the face in A the same person as the face in B?\n"
          "                    exit 0 = same, 1 = different, 2 = input error\n"
          "  detect IMG        list faces (box, score, 5 landmarks)\n"
          "  embed IMG         print the 128-d embedding of the largest face\n"
          "  eval-pairs        --pairs FILE --root DIR: verification metrics over a\n"
          "                    CSV (path_a,path_b,same) or an LFW pairs file\n"
          "  compare A B       distance of two `embed --json` outputs; embeddings of\n"
          "                    different models are refused (exit 2, model_mismatch)\n"
          "  train             --data DIR --out MODEL: train an embedding network with\n"
          "                    triplet loss (faceverify train --help)\n"
          "  eval-lfw          --root LFW_DIR: the LFW View 2 protocol on pairs.txt (or\n"
          "                    --pairs FILE): 10-fold accuracy +- std, ROC AUC, TAR@FAR;\n"
          "                    detection failures scored both as errors and with a\n"
          "                    centre-crop fallback\n"
          "  eval-openset      --root DIR (a folder per person, LFW's layout): open-set\n"
          "                    identification.  People with T+1+ images are shuffled\n"
          "                    (--seed S); up to N/2 of them enrol with their first T\n"
          "                    images (--gallery N, --templates T), the rest of their\n"
          "                    images are mated probes (at most P each,\n"
          "                    --max-probes-per-person P); the gallery is filled to N\n"
          "                    with other people (T templates or fewer); everyone else\n"
          "                    gives non-mated probes (at most P each).  Templates are\n"
          "                    fused; each probe's 21 nearest subjects decide.  Prints\n"
          "                    rank-1, FNIR at FPIR 1e-3/1e-2/5e-2 (thresholds measured\n"
          "                    on the non-mated probes) and the calibrated decision's\n"
          "                    FPIR and FNIR at --fpir F (default 0.01); a miss is a\n"
          "                    mated probe not matched or matched to someone else\n"
          "  cluster DIR       group every face of every photo under DIR (recursive)\n"
          "                    into people: {\"clusters\": [[FACE, ...], ...],\n"
          "                    \"noise\": [FACE, ...], \"skipped\": [...], ...}, largest\n"
          "                    cluster first; FACE is {\"image\": PATH}, plus \"face\": I\n"
          "                    and \"box\" when the photo has several faces.  Strictness\n"
          "                    --fmr F (default 3e-5) or --threshold T; clusters smaller\n"
          "                    than --min-cluster-size K (default 2; --min-size K here)\n"
          "                    are noise; --threads N\n"
          "\n"
          "options:\n"
          "  --detector auto|mtcnn|mmod|haar|none  face detector (auto, the default:\n"
          "                         mtcnn when models/mtcnn.bin is installed, else mmod;\n"
          "                         mtcnn: MTCNN, faces from 20 px; mmod: dlib's MMOD\n"
          "                         CNN; haar: OpenCV Haar cascade, Viola-Jones; none:\n"
          "                         the image is a tight face crop)\n"
          "  --upsample N           MMOD: double the image N times (0..2; selects mmod under\n"
          "                         --detector auto); default auto\n"
          "  --max-side N           downscale photos longer than N px for detection (0:\n"
          "                         never; default 1600 for mmod and haar, never for mtcnn)\n"
          "  --precision exact|fast MMOD arithmetic: exact (float32, dlib's boxes; the\n"
          "                         default) or fast (bf16 convolutions on CPUs with\n"
          "                         AVX-512 BF16, ~2x faster MMOD, same faces; else exact)\n"
          "  --cascade PATH         haar: cascade XML (default: haarcascade_frontalface_\n"
          "                         default.xml in $FACEVERIFY_CASCADES or\n"
          "                         /usr/share/opencv4/haarcascades)\n"
          "  --mtcnn-model PATH     mtcnn: weights (default: mtcnn.bin in the model folder)\n"
          "  --scale-factor F       haar: pyramid step (1.01..10, default 1.1)\n"
          "  --min-neighbors N      haar: hits needed to keep a face (default 3)\n"
          "  --min-size N           haar: smallest face side in px (default: window)\n"
          "  --max-size N           haar: largest face side in px (default: image)\n"
          "  --flip                 average the embeddings of the face chip and its\n"
          "                         mirror (flipped-image averaging; 2 network passes)\n"
          "  --flip-mode none|mean|unit  --flip's combination (unit: rescaled to length 1)\n"
          "  --jitters N            also embed N jittered copies of each chip and average\n"
          "                         (0..64, default 0; N more network passes; no FMR\n"
          "                         calibration)\n"
          "  --jobs N               eval: images processed at once (default 1)\n"
          "  --gallery N            eval-openset: subjects enrolled (default 100)\n"
          "  --templates T          eval-openset: images enrolled per subject (default 1)\n"
          "  --seed S               eval-openset: the draw of subjects (default 0)\n"
          "  --fpir F               eval-openset: operating point (0.001..0.1, default 0.01)\n"
          "  --max-probes-per-person P  eval-openset: probes per person (default: all)\n"
          "  --embeddings-from FILE eval: reuse the embeddings of an earlier\n"
          "                         --dump-embeddings run made with the same options\n"
          "  --dump FILE            eval: write per-pair fold,same,distance,... as CSV\n"
          "  --dump-embeddings FILE eval: write per-image path,status,embedding as CSV\n"
          "  --dump-quality FILE    eval: write per-image face quality (score, factors) as CSV\n"
          "  --no-rotations         do not look for faces turned 90/180/270 degrees (by\n"
          "                         default a photo without a confident upright face, or\n"
          "                         whose face the orientation check finds turned, is\n"
          "                         tried turned; --try-rotations: the default)\n"
          "  --threshold T          decision threshold (default: the --fmr operating point;\n"
          "                         with --flip or --model, that model's threshold)\n"
          "  --fmr F                verify: decide at false-match rate F (1e-6..0.1) with\n"
          "                         the calibrated threshold for the pair's face quality;\n"
          "                         default 0.001 for the ResNet without --flip (other\n"
          "                         models and --flip have no calibration); cluster: link\n"
          "                         faces closer than F's threshold (default 3e-5)\n"
          "  --min-cluster-size K   cluster: smaller clusters are noise (1..1000000,\n"
          "                         default 2)\n"
          "  --strict               several faces in an image is an error\n"
          "  --pick largest|center  which face to use when there are several (default largest)\n"
          "  --threads N            worker threads (default: all cores)\n"
          "  --models DIR           model folder (default: $FACEVERIFY_MODELS or built-in)\n"
          "  --model PATH           embed with a model made by `faceverify train`\n"
          "                         (verify, embed, eval-pairs; its threshold is the default)\n"
          "  --json                 machine-readable output\n"
          "  -h, --help             this text\n",
          f);
}

/* Parses an int option value within [lo, hi]. */
static int parse_int(const char *s, int lo, int hi, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

int cli_parse_common(int argc, char **argv, cli_opts *o) {
    memset(o, 0, sizeof *o);
    fv_config_init(&o->cfg);
    fv_verify_options_init(&o->verify);
    /* known before any option is checked, so a bad one is reported as JSON */
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "--json")) o->json = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (!strcmp(a, "--json")) {
            o->json = 1;
            takes = 0;
        } else if (!strcmp(a, "--flip")) {
            o->cfg.flip = CLI_FLIP_DEFAULT;
            takes = 0;
        } else if (!strcmp(a, "--flip-mode") && v) {
            if (!strcmp(v, "none"))
                o->cfg.flip = FV_FLIP_NONE;
            else if (!strcmp(v, "mean"))
                o->cfg.flip = FV_FLIP_MEAN;
            else if (!strcmp(v, "unit"))
                o->cfg.flip = FV_FLIP_UNIT;
            else {
                return bad_option(o, "--flip-mode takes none, mean or unit", NULL);
            }
        } else if (!strcmp(a, "--jitters") && v) {
            if (parse_int(v, 0, FV_MAX_JITTERS, &o->cfg.jitters)) {
                return bad_option(o, "--jitters takes 0..64", NULL);
            }
        } else if (!strcmp(a, "--jobs") && v) {
            if (parse_int(v, 1, 64, &o->jobs)) {
                return bad_option(o, "--jobs takes 1..64", NULL);
            }
        } else if (!strcmp(a, "--embeddings-from") && v) {
            o->embeddings_from = v;
        } else if (!strcmp(a, "--dump") && v) {
            o->dump = v;
        } else if (!strcmp(a, "--dump-embeddings") && v) {
            o->dump_embeddings = v;
        } else if (!strcmp(a, "--dump-quality") && v) {
            o->dump_quality = v;
        } else if (!strcmp(a, "--try-rotations") || !strcmp(a, "--no-rotations")) {
            o->verify.detect.try_rotations = a[2] == 't';
            takes = 0;
        } else if (!strcmp(a, "--strict")) {
            o->verify.strict = 1;
            takes = 0;
        } else if (!strcmp(a, "--detector") && v) {
            if (fv_detector_parse(v, &o->verify.detect.detector) != FV_OK) {
                return bad_option(o, "unknown detector '%s' (auto, mtcnn, mmod, haar, none)", v);
            }
        } else if (!strcmp(a, "--pick") && v) {
            if (!strcmp(v, "largest"))
                o->verify.detect.order = FV_ORDER_LARGEST;
            else if (!strcmp(v, "center"))
                o->verify.detect.order = FV_ORDER_CENTER;
            else {
                return bad_option(o, "--pick takes largest or center", NULL);
            }
        } else if (!strcmp(a, "--upsample") && v) {
            if (parse_int(v, 0, 2, &o->verify.detect.upsample)) {
                return bad_option(o, "--upsample takes 0..2", NULL);
            }
        } else if (!strcmp(a, "--precision") && v) {
            if (!strcmp(v, "exact"))
                o->verify.detect.precision = FV_PRECISION_EXACT;
            else if (!strcmp(v, "fast"))
                o->verify.detect.precision = FV_PRECISION_FAST;
            else {
                return bad_option(o, "--precision takes exact or fast", NULL);
            }
        } else if (!strcmp(a, "--max-side") && v) {
            if (parse_int(v, 0, 100000, &o->verify.detect.max_side)) {
                return bad_option(o, "--max-side takes 0..100000", NULL);
            }
        } else if (!strcmp(a, "--threads") && v) {
            if (parse_int(v, 1, 256, &o->cfg.threads)) {
                return bad_option(o, "--threads takes 1..256", NULL);
            }
        } else if (!strcmp(a, "--threshold") && v) {
            char *end;
            double t = strtod(v, &end);
            if (!*v || *end || !(t > 0 && t < 10)) {
                return bad_option(o, "--threshold takes a distance in (0, 10)", NULL);
            }
            o->verify.threshold = (float)t;
        } else if (!strcmp(a, "--fmr") && v) {
            char *end;
            double f = strtod(v, &end);
            if (!*v || *end || !(f >= FV_FMR_MIN && f <= FV_FMR_MAX)) {
                return bad_option(o, "--fmr takes a false-match rate in [1e-06, 0.1]", NULL);
            }
            o->verify.fmr = f;
        } else if (!strcmp(a, "--gallery") && v) {
            if (parse_int(v, 2, 1000000, &o->gallery)) {
                return bad_option(o, "--gallery takes 2..1000000 subjects", NULL);
            }
        } else if (!strcmp(a, "--templates") && v) {
            if (parse_int(v, 1, 100, &o->templates)) {
                return bad_option(o, "--templates takes 1..100", NULL);
            }
        } else if (!strcmp(a, "--max-probes-per-person") && v) {
            if (parse_int(v, 1, 1000000, &o->max_probes)) {
                return bad_option(o, "--max-probes-per-person takes 1..1000000", NULL);
            }
        } else if (!strcmp(a, "--seed") && v) {
            char *end;
            /* below 2^63, so JSON (a signed integer) reports it as given */
            if (!*v || *v == '-' || (o->seed = strtoull(v, &end, 10), *end) ||
                o->seed > (unsigned long long)INT64_MAX) {
                return bad_option(o, "--seed takes an integer in [0, 2^63)", NULL);
            }
        } else if (!strcmp(a, "--fpir") && v) {
            char *end;
            double f = strtod(v, &end);
            if (!*v || *end || !(f >= FV_FPIR_MIN && f <= FV_FPIR_MAX)) {
                return bad_option(o,
                                  "--fpir takes a false-positive identification rate in "
                                  "[0.001, 0.1]",
                                  NULL);
            }
            o->fpir = f;
        } else if (!strcmp(a, "--models") && v) {
            o->cfg.models_dir = v;
        } else if (!strcmp(a, "--cascade") && v) {
            o->cfg.haar_cascade = v;
        } else if (!strcmp(a, "--mtcnn-model") && v) {
            o->cfg.mtcnn_model = v;
        } else if (!strcmp(a, "--scale-factor") && v) {
            char *end;
            double f = strtod(v, &end);
            if (!*v || *end || !(f >= 1.01 && f <= 10)) {
                return bad_option(o, "--scale-factor takes 1.01..10", NULL);
            }
            o->verify.detect.haar_scale_factor = (float)f;
        } else if (!strcmp(a, "--min-neighbors") && v) {
            if (parse_int(v, 0, 1000, &o->verify.detect.haar_min_neighbors)) {
                return bad_option(o, "--min-neighbors takes 0..1000", NULL);
            }
        } else if (!strcmp(a, "--min-size") && v) {
            if (parse_int(v, 0, 100000, &o->verify.detect.haar_min_size)) {
                return bad_option(o, "--min-size takes 0..100000", NULL);
            }
        } else if (!strcmp(a, "--min-cluster-size") && v) {
            if (parse_int(v, 1, 1000000, &o->min_cluster_size)) {
                return bad_option(o, "--min-cluster-size takes 1..1000000", NULL);
            }
        } else if (!strcmp(a, "--max-size") && v) {
            if (parse_int(v, 0, 100000, &o->verify.detect.haar_max_size)) {
                return bad_option(o, "--max-size takes 0..100000", NULL);
            }
        } else if (!strcmp(a, "--model") && v) {
            o->model = v;
        } else if (!strcmp(a, "--pairs") && v) {
            o->pairs = v;
        } else if (!strcmp(a, "--root") && v) {
            o->root = v;
        } else if (a[0] == '-' && a[1]) {
            return bad_option(o, "unknown or incomplete option '%s'", a);
        } else {
            if (o->npos >= CLI_MAX_POS) {
                return bad_option(o, "too many arguments", NULL);
            }
            o->pos[o->npos++] = a;
            takes = 0;
        }
        i += takes;
    }
    if (o->verify.fmr > 0 && o->verify.threshold > 0)
        return bad_option(o, "give --threshold or --fmr, not both", NULL);
    return 0;
}

fv_status cli_engine(cli_opts *o, fv_engine **eng) {
    char err[512] = "";
    fv_status st = fv_engine_create(&o->cfg, eng, err, sizeof err);
    if (st != FV_OK) cli_error(o, st, "cannot load models: %s", err);
    /* the detector in force (auto: mtcnn when models/mtcnn.bin loads,
     * else mmod), as the output names it */
    if (st == FV_OK) {
        st = fv_detect_options_resolve(*eng, &o->verify.detect, err, sizeof err);
        if (st != FV_OK) {
            cli_error(o, st, "cannot load models: %s", err);
            fv_engine_destroy(*eng);
            *eng = NULL;
        }
    }
    return st;
}

fv_status cli_load(const cli_opts *o, const char *path, fv_image **img, double *ms) {
    char err[512] = "";
    double t0 = cli_now_ms();
    fv_status st = fv_image_load(path, &o->cfg.limits, img, err, sizeof err);
    if (ms) *ms = cli_now_ms() - t0;
    if (st != FV_OK) cli_error(o, st, "%s: %s", path, err[0] ? err : fv_strerror(st));
    return st;
}

fv_status cli_model(const cli_opts *o, fv_model **m) {
    *m = NULL;
    if (!o->model) return FV_OK;
    char err[512] = "";
    fv_status st = fv_model_load(o->model, m, err, sizeof err);
    if (st != FV_OK) cli_error(o, st, "cannot load model: %s", err);
    return st;
}

json_t *cli_face_json(const fv_face *f) {
    json_t *lm = json_array();
    for (int i = 0; i < FV_NUM_LANDMARKS; i++)
        json_array_append_new(lm, json_pack("[f,f]", f->landmarks[i].x, f->landmarks[i].y));
    return json_pack("{s:{s:f,s:f,s:f,s:f},s:f,s:o}", "box", "left", f->left, "top", f->top,
                     "right", f->right, "bottom", f->bottom, "score", f->score, "landmarks", lm);
}

json_t *cli_quality_json(const fv_quality *q) {
    json_t *reasons = json_array();
    for (int i = 0; i < FV_QUALITY_REASON_COUNT; i++)
        if (q->reasons & (1u << i))
            json_array_append_new(reasons, json_string(fv_quality_reason_name(1u << i)));
    return json_pack("{s:f,s:o,s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "score", q->score, "reasons", reasons,
                     "size_px", q->size_px, "sharpness", q->sharpness, "brightness", q->brightness,
                     "contrast", q->contrast, "yaw", q->yaw, "pitch", q->pitch, "detector_score",
                     q->detector_score);
}

/* The face a result used, as the API's UsedFace: the face plus how many
 * faces its image held and its quality. */
static json_t *used_face_json(const fv_face_result *r) {
    json_t *o = cli_face_json(&r->face);
    json_object_set_new(o, "faces_detected", json_integer((json_int_t)r->faces));
    json_object_set_new(o, "quality", cli_quality_json(&r->quality));
    return o;
}

/* The API's timings_ms: the stages (summed over the images of a result)
 * and the whole command's time after the engine was ready. */
static json_t *timings_json(const fv_timings *t, double total_ms) {
    return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "decode", t->decode_ms, "detect", t->detect_ms,
                     "landmarks", t->landmarks_ms, "chip", t->chip_ms, "embed", t->embed_ms,
                     "total", total_ms);
}

double cli_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void cli_print_json(json_t *j) {
    char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(7));
    if (s) puts(s);
    free(s);
    json_decref(j);
}

/* The verify answer's operating point, as the API's OperatingPoint: the
 * false-match rate decided at (null when a threshold decided) and the
 * threshold in force. */
static json_t *operating_point_json(const fv_verify_result *r) {
    return json_pack("{s:o,s:f}", "fmr", r->fmr > 0 ? json_real(r->fmr) : json_null(), "threshold",
                     (double)r->threshold);
}

/* verify's text answer: the decision, then its operating point (a rate
 * printed as "1e-03", as people write it) and the pair's estimated FMR. */
static void print_verify_human(const fv_verify_result *r) {
    printf("%s (distance %.4f, threshold %.4f, similarity %.3f)\n",
           r->verified ? "same person" : "different people", r->distance, r->threshold,
           r->similarity);
    if (r->fmr > 0)
        printf("operating point: false-match rate %.0e (threshold %.4f for this pair's quality)",
               r->fmr, r->threshold);
    else
        printf("operating point: threshold %.4f", r->threshold);
    if (r->estimated_fmr >= 0) printf("; estimated false-match rate here %.2g", r->estimated_fmr);
    printf("\n");
    if (r->a.faces > 1 || r->b.faces > 1)
        printf("note: several faces found (%zu in A, %zu in B); the largest was used\n", r->a.faces,
               r->b.faces);
}

static int cmd_verify(cli_opts *o) {
    if (o->npos != 2)
        return cli_exit_code(cli_error(o, FV_E_INVALID_ARGUMENT, "verify needs two images"));
    fv_engine *eng = NULL;
    fv_model *m = NULL;
    fv_image *a = NULL, *b = NULL;
    double ta = 0, tb = 0;
    fv_verify_result r;
    char err[512] = "";
    fv_status st = cli_load(o, o->pos[0], &a, &ta);
    if (st == FV_OK) st = cli_load(o, o->pos[1], &b, &tb);
    if (st == FV_OK) st = cli_model(o, &m);
    if (st == FV_OK) st = cli_engine(o, &eng);
    if (st == FV_OK) {
        fv_verify_options vo = o->verify;
        vo.model = m; /* NULL: the ResNet */
        /* The product's default operating point where a calibration
         * exists (the plain ResNet); --flip, --jitters and trained models keep their
         * own thresholds. */
        if (vo.threshold <= 0 && vo.fmr <= 0 && !m && o->cfg.flip == FV_FLIP_NONE &&
            o->cfg.jitters == 0)
            vo.fmr = FV_DEFAULT_FMR;
        st = fv_verify(eng, a, b, &vo, &r, err, sizeof err);
        if (st != FV_OK) cli_error(o, st, "%s", err);
    }
    int code = cli_exit_code(st);
    if (st == FV_OK) {
        r.a.timings.decode_ms = ta;
        r.b.timings.decode_ms = tb;
        if (o->json) {
            fv_timings t = r.a.timings;
            t.decode_ms += r.b.timings.decode_ms;
            t.detect_ms += r.b.timings.detect_ms;
            t.landmarks_ms += r.b.timings.landmarks_ms;
            t.chip_ms += r.b.timings.chip_ms;
            t.embed_ms += r.b.timings.embed_ms;
            char id[160];
            cli_print_json(json_pack(
                "{s:b,s:f,s:f,s:f,s:o,s:o,s:{s:o,s:o},s:s,s:s,s:o}", "verified", r.verified,
                "distance", r.distance, "threshold", r.threshold, "similarity", r.similarity,
                "operating_point", operating_point_json(&r), "estimated_fmr",
                r.estimated_fmr >= 0 ? json_real(r.estimated_fmr) : json_null(), "faces", "a",
                used_face_json(&r.a), "b", used_face_json(&r.b), "model",
                cli_model_id(o, m, id, sizeof id), "detector", r.detector, "timings_ms",
                timings_json(&t, r.total_ms + ta + tb)));
        } else {
            print_verify_human(&r);
        }
        code = r.verified ? CLI_EXIT_OK : CLI_EXIT_DIFFERENT;
    }
    fv_image_destroy(a);
    fv_image_destroy(b);
    fv_model_destroy(m);
    fv_engine_destroy(eng);
    return code;
}

/* A detected face as the API's /detect answers it: the face and its
 * quality, measured on its aligned chip (left out if the chip fails). */
static json_t *detected_face_json(const fv_engine *eng, const fv_image *img, const cli_opts *o,
                                  const fv_face *f) {
    json_t *fj = cli_face_json(f);
    unsigned char chip[FV_CHIP_SIZE * FV_CHIP_SIZE * 3];
    fv_quality q;
    if (fv_face_chip(eng, img, f, chip) == FV_OK &&
        fv_face_quality(f, o->verify.detect.detector, chip, &q) == FV_OK)
        json_object_set_new(fj, "quality", cli_quality_json(&q));
    return fj;
}

static int cmd_detect(cli_opts *o) {
    if (o->npos != 1)
        return cli_exit_code(cli_error(o, FV_E_INVALID_ARGUMENT, "detect needs one image"));
    fv_engine *eng = NULL;
    fv_image *img = NULL;
    char err[512] = "";
    enum { CAP = 256 };
    fv_face *faces = calloc(CAP, sizeof *faces);
    size_t n = 0;
    double td = 0, t0 = 0, t1 = 0;
    fv_status st = faces ? FV_OK : FV_E_NO_MEMORY;
    if (st == FV_OK) st = cli_load(o, o->pos[0], &img, &td);
    if (st == FV_OK) st = cli_engine(o, &eng);
    if (st == FV_OK) {
        t0 = cli_now_ms();
        st = fv_detect(eng, img, &o->verify.detect, faces, CAP, &n, err, sizeof err);
        t1 = cli_now_ms();
        if (st != FV_OK) cli_error(o, st, "%s", err);
    } else if (!faces) {
        cli_error(o, st, "out of memory");
    }
    if (st == FV_OK) {
        size_t shown = n < CAP ? n : CAP;
        if (o->json) {
            json_t *arr = json_array();
            double t2 = cli_now_ms();
            for (size_t i = 0; i < shown; i++)
                json_array_append_new(arr, detected_face_json(eng, img, o, &faces[i]));
            double tq = cli_now_ms() - t2;
            cli_print_json(json_pack(
                "{s:o,s:I,s:{s:i,s:i},s:s,s:{s:f,s:f,s:f,s:f}}", "faces", arr, "count",
                (json_int_t)n, "image", "width", img->width, "height", img->height, "detector",
                fv_detector_name(o->verify.detect.detector), "timings_ms", "decode", td, "detect",
                t1 - t0, "quality", tq, "total", td + t1 - t0 + tq));
        } else {
            printf("%zu face%s\n", n, n == 1 ? "" : "s");
            for (size_t i = 0; i < shown; i++)
                printf("  box %.0f,%.0f,%.0f,%.0f  score %.3f\n", faces[i].left, faces[i].top,
                       faces[i].right, faces[i].bottom, faces[i].score);
        }
    }
    free(faces);
    fv_image_destroy(img);
    fv_engine_destroy(eng);
    return cli_exit_code(st);
}

static int cmd_embed(cli_opts *o) {
    if (o->npos != 1)
        return cli_exit_code(cli_error(o, FV_E_INVALID_ARGUMENT, "embed needs one image"));
    fv_engine *eng = NULL;
    fv_model *m = NULL;
    fv_image *img = NULL;
    char err[512] = "";
    fv_face_result r;
    double td = 0, t0 = 0, t1 = 0;
    fv_status st = cli_load(o, o->pos[0], &img, &td);
    if (st == FV_OK) st = cli_model(o, &m);
    if (st == FV_OK) st = cli_engine(o, &eng);
    if (st == FV_OK) {
        t0 = cli_now_ms();
        st = fv_model_embed_face(eng, m, img, &o->verify.detect, o->verify.strict, &r, err,
                                 sizeof err);
        t1 = cli_now_ms();
        if (st != FV_OK) cli_error(o, st, "%s", err);
    }
    if (st == FV_OK) {
        const int dim = m ? fv_model_dim(m) : FV_EMBED_DIM;
        r.timings.decode_ms = td;
        json_t *emb = json_array();
        for (int i = 0; i < dim; i++) json_array_append_new(emb, json_real(r.embedding[i]));
        if (o->json) {
            char id[160];
            cli_print_json(json_pack("{s:s,s:o,s:o,s:o}", "model",
                                     cli_model_id(o, m, id, sizeof id), "face", used_face_json(&r),
                                     "embedding", emb, "timings_ms",
                                     timings_json(&r.timings, td + t1 - t0)));
        } else {
            for (int i = 0; i < dim; i++)
                printf("%.7g%c", r.embedding[i], i + 1 < dim ? ' ' : '\n');
            json_decref(emb);
        }
    }
    fv_image_destroy(img);
    fv_model_destroy(m);
    fv_engine_destroy(eng);
    return cli_exit_code(st);
}

/* Reads an `embed --json` output: its model id (the embedding space,
 * cli_model_id) and embedding. */
static fv_status read_template(const cli_opts *o, const char *path, char *model, size_t cap,
                               float *emb, int *dim) {
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (!j) return cli_error(o, FV_E_INVALID_ARGUMENT, "%s: %s", path, je.text);
    const char *id = json_string_value(json_object_get(j, "model"));
    json_t *e = json_object_get(j, "embedding");
    size_t n = json_array_size(e);
    fv_status st = FV_OK;
    if (!id || n == 0 || n > FV_EMBED_DIM) {
        st = cli_error(o, FV_E_INVALID_ARGUMENT,
                       "%s: needs \"model\" and an \"embedding\" of 1..%d numbers", path,
                       FV_EMBED_DIM);
    } else {
        snprintf(model, cap, "%s", id);
        for (size_t i = 0; i < n && st == FV_OK; i++) {
            json_t *v = json_array_get(e, i);
            if (!json_is_number(v)) st = FV_E_INVALID_ARGUMENT;
            emb[i] = (float)json_number_value(v);
        }
        if (st != FV_OK) cli_error(o, st, "%s: embedding values must be numbers", path);
        *dim = (int)n;
    }
    json_decref(j);
    return st;
}

static int cmd_compare(cli_opts *o) {
    if (o->npos != 2)
        return cli_exit_code(
            cli_error(o, FV_E_INVALID_ARGUMENT, "compare needs two `embed --json` files"));
    char ma[160], mb[160];
    float a[FV_EMBED_DIM], b[FV_EMBED_DIM], d = 0;
    int da = 0, db = 0;
    fv_status st = read_template(o, o->pos[0], ma, sizeof ma, a, &da);
    if (st == FV_OK) st = read_template(o, o->pos[1], mb, sizeof mb, b, &db);
    if (st != FV_OK) return CLI_EXIT_INPUT;
    st = da == db ? fv_compare(ma, a, mb, b, da, &d) : FV_E_MODEL_MISMATCH;
    if (st != FV_OK)
        return cli_exit_code(cli_error(o, st, "%s: %s vs %s", fv_status_name(st), ma, mb));
    if (o->json)
        cli_print_json(json_pack("{s:f,s:s}", "distance", (double)d, "model", ma));
    else
        printf("distance %.4f (model %s)\n", d, ma);
    return CLI_EXIT_OK;
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_INPUT : CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("faceverify %s\n", FV_VERSION_STRING);
        return CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "train")) return cli_train(argc - 2, argv + 2);
    cli_opts o;
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
    /* For cluster, --min-size is the smallest cluster (Haar's smallest face
     * is no option a clustering run needs). */
    if (!strcmp(argv[1], "cluster"))
        for (int i = 2; i < argc; i++)
            if (!strcmp(argv[i], "--min-size")) argv[i] = "--min-cluster-size";
    if (cli_parse_common(argc - 2, argv + 2, &o)) return CLI_EXIT_INPUT;
    const char *cmd = argv[1];
    if (!strcmp(cmd, "verify")) return cmd_verify(&o);
    if (!strcmp(cmd, "detect")) return cmd_detect(&o);
    if (!strcmp(cmd, "embed")) return cmd_embed(&o);
    if (!strcmp(cmd, "eval-pairs")) return cli_eval_pairs(&o);
    if (!strcmp(cmd, "compare")) return cmd_compare(&o);
    if (!strcmp(cmd, "eval-lfw")) return cli_eval_lfw(&o);
    if (!strcmp(cmd, "eval-openset")) return cli_eval_openset(&o);
    if (!strcmp(cmd, "cluster")) return cli_cluster(&o);
    return cli_exit_code(
        cli_error(&o, FV_E_INVALID_ARGUMENT, "unknown command '%s' (try --help)", cmd));
}
