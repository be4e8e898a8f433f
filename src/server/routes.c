/*
 * routes.c: the route table of faceverifyd (ROUTES, at the end: method,
 * path, handler, auth, audit action) and the handlers of its JSON API.
 *
 * Each handler reads its inputs through http.h, calls the library (only
 * include/faceverify.h), the store and the index, and fills one response.
 * Library failures go through fvs_status_error, the single map from
 * fv_status to HTTP status and error code.
 *
 * Decisions: /subjects/{id}/verify compares the probe with every template
 * of the subject and decides on the best match (smallest distance), which
 * is robust to one poor enrollment photo and matches what /identify ranks
 * by.  /identify detects every face in the probe and answers one result
 * per face; its match is open set at a false-positive identification rate
 * (fused subject templates and a normalised score, index.c) where the
 * model has a calibration and the request gives no threshold or k, else a
 * k-nearest-neighbour vote (index.c).
 *
 * Operating points: the verify endpoints decide at a false-match rate
 * (fv_fmr_threshold) where the collection's model has a calibration, so
 * the threshold follows the pair's quality; a threshold, asked for or the
 * collection's own, decides as given.  get_operating_point has the order.
 */
#include <ctype.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/assets.h"
#include "server/audit.h"
#include "server/auth.h"
#include "server/chip_png.h"
#include "server/corrections.h"
#include "server/crypto.h"
#include "server/demo.h"
#include "server/enrol.h"
#include "server/http.h"
#include "search/cluster.h"

#define MAX_QUERIES 64
#define FALLBACK_THRESHOLD 0.6f

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------ helpers */

static void db_error(fvs_resp *out, const char *err);

static int authenticate(fvs_req *r, fvs_resp *out) {
    const char *key = fvs_req_header(r, "X-API-Key");
    char prefix[FVS_KEY_PREFIX_LEN + 1];
    unsigned char hash[FVS_KEY_HASH_BYTES];
    if (!key || fvs_key_digest(key, prefix, hash)) {
        fvs_error(out, 401, "unauthorized", key ? "invalid API key" : "missing X-API-Key header");
        return -1;
    }
    char err[256];
    int rc = fvs_collection_by_key(r->srv->store, prefix, hash, &r->coll, err, sizeof err);
    if (rc < 0) {
        db_error(out, err);
        return -1;
    }
    if (rc > 0) {
        fvs_error(out, 401, "unauthorized", "invalid API key");
        return -1;
    }
    snprintf(r->key_prefix, sizeof r->key_prefix, "%s", prefix);
    int wait = 0;
    if (fvs_guard_rate(r->srv->guard, r->coll.id, &wait)) {
        fvs_error(out, 429, "rate_limited",
                  "this API key is limited to %g requests/s; retry in %d s", r->srv->cfg.rate_limit,
                  wait);
        out->retry_after = wait;
        return -1;
    }
    return 0;
}

/* The driver's text of a database failure names the database's host,
 * port, user or file: it goes to the operator's log, never into an answer,
 * which may go to a client that has not even been authenticated yet (the
 * key check itself needs the database).  One line per LOG_EVERY_S seconds
 * at most, so that a client polling during an outage cannot flood the
 * log; the one mutable static here, an atomic timestamp. */
#define LOG_EVERY_S 10
static void log_db_failure(const char *err) {
    static _Atomic long long last;
    long long now = (long long)time(NULL), prev = atomic_load(&last);
    if (now - prev < LOG_EVERY_S || !atomic_compare_exchange_strong(&last, &prev, now)) return;
    fprintf(stderr, "faceverifyd: database unavailable: %s\n", err);
}

static void db_error(fvs_resp *out, const char *err) {
    if (strncmp(err, FVS_TKEY_ERROR, strlen(FVS_TKEY_ERROR)) == 0) {
        /* Encrypted templates and no or the wrong key: no retry helps. */
        fvs_error(out, 503, "template_key_unavailable", "%s", err);
        return;
    }
    log_db_failure(err);
    fvs_error(out, 503, "unavailable",
              "database unavailable; retry later (detail in the server log)");
    out->retry_after = 1;
}

static int need_engine(fvs_req *r, fvs_resp *out) {
    if (r->srv->engine) return 0;
    fvs_error(out, 503, "model_unavailable", "models not loaded: %s", r->srv->engine_error);
    return -1;
}

/* The collection's model (models.h): *m NULL for the ResNet.  A trained
 * model the registry lacks (its file gone from --models-dir): 503, since
 * embedding with another model would give templates that never match. */
static int coll_model(fvs_req *r, const fv_model **m, fvs_resp *out) {
    const char *id = NULL;
    if (fvs_models_find(r->srv->models, r->coll.model, &id, m) == 0) return 0;
    fvs_error(out, 503, "model_unavailable",
              "this collection's model %s is not loaded (no such file in the models dir)",
              r->coll.model);
    return -1;
}

/* The collection's default threshold: its own, else its model's
 * calibrated one (from the model file), else the engine's. */
static float coll_threshold(const fvs_req *r) {
    const char *id = NULL;
    const fv_model *m = NULL;
    if (r->coll.threshold > 0) return (float)r->coll.threshold;
    if (fvs_models_find(r->srv->models, r->coll.model, &id, &m) == 0 && m &&
        fv_model_threshold(m) > 0)
        return fv_model_threshold(m);
    return r->srv->default_threshold;
}

/* An optional "model" in a JSON body of embeddings: what made them.  Not
 * the collection's model: 409 model_mismatch, never a distance across
 * two embedding spaces. */
static int check_model_field(fvs_req *r, fvs_resp *out) {
    const json_t *mj = r->json ? json_object_get(r->json, "model") : NULL;
    if (!mj || json_is_null(mj)) return 0;
    if (!json_is_string(mj)) {
        fvs_error(out, 400, "validation_error", "model: expected a model id");
        return -1;
    }
    if (strcmp(json_string_value(mj), r->coll.model) == 0) return 0;
    fvs_error(out, 409, "model_mismatch",
              "embeddings of model %.64s, but this collection uses %s: compare only embeddings "
              "of the same model",
              json_string_value(mj), r->coll.model);
    return -1;
}

/* The threshold in force: request > collection override > model > engine.
 * A request's is in (0, FVS_THRESHOLD_MAX]: the ResNet's embeddings have
 * norm about 1.4 (measured) and trained models' are unit vectors, so past
 * 2 every face matches every other and the "decision" means nothing. */
static int get_threshold(fvs_req *r, float *t, fvs_resp *out) {
    double d = coll_threshold(r);
    if (fvs_req_number(r, "threshold", 1e-6, FVS_THRESHOLD_MAX, &d, out)) return -1;
    *t = (float)d;
    return 0;
}

/* ------------------------------------------------------ operating points */

/* How one verify request decides: at a false-match rate (fmr > 0; the
 * threshold then depends on the pair's quality) or at a fixed threshold. */
typedef struct op_point {
    double fmr;      /* > 0: decide at this false-match rate */
    float threshold; /* fmr == 0: the threshold in force */
} op_point;

/* Whether the collection's model has a false-match-rate calibration (the
 * plain ResNet has; trained models carry only their own threshold). */
static int coll_calibrated(const fvs_req *r) {
    float t = 0;
    return fv_fmr_threshold(r->coll.model, FV_DEFAULT_FMR, 1.0f, &t) == FV_OK;
}

/* The collection's default operating point: its own threshold, else its
 * own fmr, else the server's --default-fmr, each of the last two only where
 * its model is calibrated; else its model's threshold (coll_threshold). */
static void coll_operating_point(const fvs_req *r, op_point *op) {
    op->fmr = 0;
    op->threshold = coll_threshold(r);
    if (r->coll.threshold > 0 || !coll_calibrated(r)) return;
    /* default_fmr 0: the server was told to keep the fixed threshold */
    op->fmr = r->coll.fmr > 0 ? r->coll.fmr : r->srv->cfg.default_fmr;
}

/* The operating point in force: the request's "threshold", else its
 * "fmr" (one or the other: 400 for both), else the collection's default.
 * An "fmr" for a model without a calibration is a 400: deciding at another
 * rate than the one asked for would be a silent lie. */
static int get_operating_point(fvs_req *r, op_point *op, fvs_resp *out) {
    double t = -1, f = -1;
    if (fvs_req_number(r, "threshold", 1e-6, FVS_THRESHOLD_MAX, &t, out) ||
        fvs_req_number(r, "fmr", FV_FMR_MIN, FV_FMR_MAX, &f, out))
        return -1;
    if (t > 0 && f > 0) {
        fvs_error(out, 400, "validation_error",
                  "threshold, fmr: give a threshold or a false-match rate, not both");
        return -1;
    }
    if (f > 0 && !coll_calibrated(r)) {
        fvs_error(out, 400, "validation_error",
                  "fmr: no false-match-rate calibration for model %s; give a threshold",
                  r->coll.model);
        return -1;
    }
    coll_operating_point(r, op);
    if (t > 0) {
        op->fmr = 0;
        op->threshold = (float)t;
    } else if (f > 0) {
        op->fmr = f;
    }
    return 0;
}

/* The threshold op gives a pair of quality q (fv_pair_quality; 1 when
 * unknown). */
static float op_threshold(const fvs_req *r, const op_point *op, float q) {
    float t = op->threshold;
    if (!(q >= 0.0f)) q = 0.0f; /* NaN or negative: the strictest bin */
    if (q > 1.0f) q = 1.0f;
    if (op->fmr > 0 && fv_fmr_threshold(r->coll.model, op->fmr, q, &t) != FV_OK) t = op->threshold;
    return t;
}

/* The answer's "operating_point": {"fmr": the rate decided at or null,
 * "threshold": t, the threshold in force}. */
static json_t *op_json(const op_point *op, float t) {
    return json_pack("{s:o, s:f}", "fmr", op->fmr > 0 ? json_real(op->fmr) : json_null(),
                     "threshold", (double)t);
}

/* The calibrated false-match rate at distance d for a pair of quality q,
 * or null when the collection's model has no calibration. */
static json_t *estimated_fmr_json(const fvs_req *r, float d, float q) {
    double f = 0;
    if (!(q >= 0.0f)) q = 0.0f;
    if (q > 1.0f) q = 1.0f;
    if (fv_estimated_fmr(r->coll.model, d, q, &f) != FV_OK) return json_null();
    return json_real(f);
}

/* Adds the decision fields every verify answer carries to o: verified,
 * distance, threshold (in force), similarity, operating_point and
 * estimated_fmr (est, taken).  Returns o. */
static json_t *add_decision(json_t *o, const op_point *op, float d, float t, json_t *est) {
    if (!o) {
        json_decref(est);
        return NULL;
    }
    json_object_set_new(o, "verified", json_boolean(d <= t));
    json_object_set_new(o, "distance", json_real((double)d));
    json_object_set_new(o, "threshold", json_real((double)t));
    json_object_set_new(o, "similarity", json_real((double)fv_similarity(d, t)));
    json_object_set_new(o, "operating_point", op_json(op, t));
    json_object_set_new(o, "estimated_fmr", est);
    return o;
}

/* Detection options from the request's optional "detector" field (mmod,
 * haar, mtcnn, none or auto; default auto: mtcnn when its weights are
 * installed, else mmod) and "try_rotations" (JSON true/false, or the
 * text true/false/1/0; default true: turned photos are found). */
static int get_detect_options(fvs_req *r, fv_detect_options *opt, fvs_resp *out) {
    char buf[64];
    fv_detect_options_init(opt);
    const char *name = fvs_req_text(r, "detector", buf, sizeof buf);
    if (name && fv_detector_parse(name, &opt->detector) != FV_OK) {
        fvs_error(out, 400, "validation_error",
                  "detector: expected 'auto', 'mtcnn', 'mmod', 'haar' or 'none'");
        return -1;
    }
    const char *rot = fvs_req_text(r, "try_rotations", buf, sizeof buf);
    if (rot) {
        int on = !strcmp(rot, "true") || !strcmp(rot, "1");
        if (!on && strcmp(rot, "false") && strcmp(rot, "0")) {
            fvs_error(out, 400, "validation_error", "try_rotations: expected true or false");
            return -1;
        }
        opt->try_rotations = on;
    }
    /* the detector in force (auto: mtcnn when its weights load), for the
     * memory estimate and the answer's "detector" */
    char err[256] = "";
    if (r->srv->engine) {
        fv_status st = fv_detect_options_resolve(r->srv->engine, opt, err, sizeof err);
        if (st != FV_OK) {
            fvs_status_error(out, st, err);
            return -1;
        }
    }
    return 0;
}

static int get_int(fvs_req *r, const char *name, int lo, int hi, int *v, fvs_resp *out) {
    double d = *v;
    if (fvs_req_number(r, name, lo, hi, &d, out)) return -1;
    if (d != (double)(int)d) {
        fvs_error(out, 400, "validation_error", "%s: expected an integer", name);
        return -1;
    }
    *v = (int)d;
    return 0;
}

/* Decodes the images in fields name[0..n) (n <= 2) into img[], after
 * reserving their estimated peak memory (decode plus detection at
 * max_side, guard.h) from the server's budget: the sizes come from the
 * headers (fv_image_probe), so nothing image-sized exists before the
 * reservation.  Over the budget the request waits up to MEM_WAIT_MS, then
 * answers 503 overloaded with Retry-After; a request that alone exceeds
 * the budget answers 413.  ms[i] (may be NULL): decode time of image i;
 * mac (may be NULL): image 0's stored fingerprint (store.h
 * fvs_store_image_mac; "" when none is kept).  On success *held is the
 * reservation: free the images with drop_images(r, img, n, *held).  On
 * failure out is filled, no image and no reservation is left. */
#define MEM_WAIT_MS 2000
static int load_images(fvs_req *r, const char *const *name, int n, const fv_detect_options *det,
                       fv_image **img, double *ms, char *mac, uint64_t *held, fvs_resp *out) {
    unsigned char *owned[2] = {NULL, NULL};
    const unsigned char *data[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    int w[2] = {0, 0}, h[2] = {0, 0}, got = 0, ok = 0;
    unsigned bpp[2] = {0, 0};
    uint64_t cost = 0;
    char err[256] = "", msg[320];
    fv_status st = FV_OK;
    if (n < 1 || n > 2) {
        fvs_status_error(out, FV_E_INTERNAL, "load_images: bad image count");
        return -1;
    }
    for (got = 0; got < n; got++) {
        int rc = fvs_req_bytes(r, name[got], &owned[got], &data[got], &len[got], out);
        if (rc < 0) goto done;
        if (rc > 0) {
            fvs_error(out, 400, "validation_error", "missing field '%s' (an image file)",
                      name[got]);
            goto done;
        }
    }
    if (mac) fvs_store_image_mac(r->srv->store, data[0], len[0], mac);
    for (int i = 0; i < n; i++) {
        st = fv_image_probe(data[i], len[i], NULL, &w[i], &h[i], err, sizeof err);
        bpp[i] = fv_image_decode_bpp(data[i], len[i]);
        if (st != FV_OK) {
            snprintf(msg, sizeof msg, "%s: %s", name[i], err[0] ? err : fv_strerror(st));
            fvs_status_error(out, st, msg);
            goto done;
        }
    }
    cost = fvs_guard_images_cost(w, h, bpp, n, det->detector, det->max_side);
    uint64_t budget = r->srv->cfg.memory_budget;
    int rc = fvs_guard_mem_acquire(r->srv->guard, budget, cost, MEM_WAIT_MS);
    if (rc == -2) {
        fvs_error(out, 413, "payload_too_large",
                  "decoding and detecting on %s needs about %" PRIu64
                  " MB, more than this server's memory budget of %" PRIu64
                  " MB (--memory-budget): send a smaller image",
                  n > 1 ? "these images" : "this image", cost / 1000000, budget / 1000000);
        goto done;
    }
    if (rc) {
        fvs_error(out, 503, "overloaded",
                  "the server's memory budget for images is in use; retry in 1 s");
        out->retry_after = 1;
        goto done;
    }
    for (int i = 0; i < n; i++) {
        double t0 = now_ms();
        st = fv_image_decode(data[i], len[i], NULL, &img[i], err, sizeof err);
        if (ms) ms[i] = now_ms() - t0;
        if (st != FV_OK) {
            snprintf(msg, sizeof msg, "%s: %s", name[i], err[0] ? err : fv_strerror(st));
            fvs_status_error(out, st, msg);
            for (int j = 0; j < i; j++) {
                fv_image_destroy(img[j]);
                img[j] = NULL;
            }
            fvs_guard_mem_release(r->srv->guard, cost);
            goto done;
        }
    }
    *held = cost;
    ok = 1;
done:
    for (int i = 0; i < 2; i++) free(owned[i]);
    return ok ? 0 : -1;
}

/* One image field: load_images for n == 1. */
static int load_image(fvs_req *r, const char *name, const fv_detect_options *det, fv_image **img,
                      double *ms, uint64_t *held, fvs_resp *out) {
    return load_images(r, &name, 1, det, img, ms, NULL, held, out);
}

/* Frees what load_images made (NULL entries are skipped) and returns its
 * reservation to the budget. */
static void drop_images(fvs_req *r, fv_image **img, int n, uint64_t held) {
    for (int i = 0; i < n; i++) {
        fv_image_destroy(img[i]);
        img[i] = NULL;
    }
    fvs_guard_mem_release(r->srv->guard, held);
}

static json_t *face_json(const fv_face *f) {
    json_t *lm = json_array();
    for (int i = 0; i < FV_NUM_LANDMARKS; i++)
        json_array_append_new(
            lm, json_pack("[f, f]", (double)f->landmarks[i].x, (double)f->landmarks[i].y));
    return json_pack("{s:{s:f, s:f, s:f, s:f}, s:f, s:o}", "box", "left", (double)f->left, "top",
                     (double)f->top, "right", (double)f->right, "bottom", (double)f->bottom,
                     "score", (double)f->score, "landmarks", lm);
}

/* The API's Quality object (the CLI's cli_quality_json has the same
 * shape): the score, the names of its reason bits, and what was measured. */
static json_t *quality_json(const fv_quality *q) {
    json_t *reasons = json_array();
    for (int i = 0; i < FV_QUALITY_REASON_COUNT; i++)
        if (q->reasons & (1u << i))
            json_array_append_new(reasons, json_string(fv_quality_reason_name(1u << i)));
    return json_pack("{s:f, s:o, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "score", (double)q->score,
                     "reasons", reasons, "size_px", (double)q->size_px, "sharpness",
                     (double)q->sharpness, "brightness", (double)q->brightness, "contrast",
                     (double)q->contrast, "yaw", (double)q->yaw, "pitch", (double)q->pitch,
                     "detector_score", (double)q->detector_score);
}

/* Sets face_obj's "quality" from chip (the face's aligned chip, found by
 * detector); left out when the measure fails (it only refuses NULLs). */
static void add_quality(json_t *face_obj, const fv_face *face, fv_detector detector,
                        const unsigned char *chip) {
    fv_quality q;
    if (fv_face_quality(face, detector, chip, &q) == FV_OK)
        json_object_set_new(face_obj, "quality", quality_json(&q));
}

static int parse_id(const char *s, size_t len, int64_t *id) {
    if (len == 0 || len > 18) return -1;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v <= 0) return -1;
    *id = v;
    return 0;
}

/* Reads a JSON array of FV_EMBED_DIM finite numbers. */
static int parse_embedding(const json_t *j, const char *name, float *out, fvs_resp *resp) {
    if (!json_is_array(j) || json_array_size(j) != FV_EMBED_DIM) {
        fvs_error(resp, 400, "validation_error", "%s: expected an array of %d numbers", name,
                  FV_EMBED_DIM);
        return -1;
    }
    for (size_t i = 0; i < FV_EMBED_DIM; i++) {
        json_t *v = json_array_get(j, i);
        double d = json_number_value(v);
        if (!json_is_number(v) || !(d > -1e6 && d < 1e6)) {
            fvs_error(resp, 400, "validation_error", "%s[%zu]: expected a finite number", name, i);
            return -1;
        }
        out[i] = (float)d;
    }
    return 0;
}

static json_t *timings_json(const fv_timings *t, double decode_ms, double total_ms) {
    return json_pack("{s:f, s:f, s:f, s:f, s:f, s:f}", "decode", decode_ms, "detect", t->detect_ms,
                     "landmarks", t->landmarks_ms, "chip", t->chip_ms, "embed", t->embed_ms,
                     "total", total_ms);
}

/* Whether the request asked for the aligned face chips: "return_chips"
 * (JSON true, or the text true/1) or the form field chips=1. */
static int want_chips(fvs_req *r) {
    static const char *const names[] = {"return_chips", "chips"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char buf[16];
        const char *v = fvs_req_text(r, names[i], buf, sizeof buf);
        if (v && (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)) return 1;
    }
    return 0;
}

/* Adds "chip" (a PNG data URL of the aligned 150x150 chip) to face_obj.
 * chip: the chip's RGB bytes, or NULL to cut it from img now. */
static void add_chip(json_t *face_obj, const fv_engine *eng, const fv_image *img,
                     const fv_face *face, const unsigned char *chip) {
    unsigned char own[FV_CHIP_SIZE * FV_CHIP_SIZE * 3];
    if (!chip) {
        if (fv_face_chip(eng, img, face, own) != FV_OK) return;
        chip = own;
    }
    json_t *url = fvs_chip_data_url(chip, FV_CHIP_SIZE, FV_CHIP_SIZE);
    if (url) json_object_set_new(face_obj, "chip", url);
}

/* ------------------------------------------------------------ handlers */

static void h_health(fvs_req *r, fvs_resp *out) {
    char err[256] = "";
    int version = 0;
    int db_ok = fvs_store_schema_version(r->srv->store, &version, err, sizeof err) == 0;
    int migrated = db_ok && version >= fvs_store_latest_version();
    int ok = migrated && r->srv->engine;
    json_t *o =
        json_pack("{s:s, s:s, s:b, s:i, s:b, s:s, s:s}", "status", ok ? "ok" : "unavailable",
                  "database", fvs_store_backend(r->srv->store), "database_ok", db_ok,
                  "schema_version", version, "models_loaded", r->srv->engine != NULL, "model",
                  FV_MODEL_ID, "version", FV_VERSION_STRING);
    if (!ok) {
        const char *code = r->srv->engine ? "unavailable" : "model_unavailable";
        char msg[400];
        if (!db_ok) {
            /* Health is keyless: the detail goes to the log only. */
            log_db_failure(err);
            snprintf(msg, sizeof msg, "database unavailable (detail in the server log)");
        } else if (!migrated) {
            snprintf(msg, sizeof msg, "database schema %d, need %d: run faceverifyd migrate",
                     version, fvs_store_latest_version());
        } else {
            snprintf(msg, sizeof msg, "models not loaded: %s", r->srv->engine_error);
        }
        json_object_set_new(o, "error", json_pack("{s:s, s:s}", "code", code, "message", msg));
    }
    fvs_reply(out, ok ? 200 : 503, o);
}

/* Faces per photo that /detect lists and /identify searches
 * (--max-faces). */
static size_t max_faces(const fvs_req *r) {
    int m = r->srv->cfg.max_faces;
    return m > 0 ? (size_t)m : FVS_MAX_FACES_DEFAULT;
}

/* Detects up to cap faces of img into a malloc'ed *faces (the caller
 * frees it, also on failure); *n is every face found, which may exceed
 * cap. */
static fv_status detect_upto(fvs_req *r, const fv_image *img, const fv_detect_options *opt,
                             size_t cap, fv_face **faces, size_t *n, char *err, size_t errlen) {
    *faces = malloc(cap * sizeof **faces);
    *n = 0;
    if (!*faces) {
        snprintf(err, errlen, "out of memory");
        return FV_E_NO_MEMORY;
    }
    return fv_detect(r->srv->engine, img, opt, *faces, cap, n, err, errlen);
}

static void h_detect(fvs_req *r, fvs_resp *out) {
    if (need_engine(r, out)) return;
    fv_image *img = NULL;
    uint64_t held = 0;
    double t0 = now_ms(), dec = 0;
    fv_detect_options opt;
    if (get_detect_options(r, &opt, out)) return;
    if (load_image(r, "image", &opt, &img, &dec, &held, out)) return;
    const size_t cap = max_faces(r);
    fv_face *faces = NULL;
    size_t n = 0;
    char err[256] = "";
    double t1 = now_ms();
    fv_status st = detect_upto(r, img, &opt, cap, &faces, &n, err, sizeof err);
    double det = now_ms() - t1;
    if (st != FV_OK) {
        free(faces);
        drop_images(r, &img, 1, held);
        fvs_status_error(out, st, err);
        return;
    }
    json_t *arr = json_array();
    int chips = want_chips(r);
    double t2 = now_ms();
    for (size_t i = 0; i < n && i < cap; i++) {
        json_t *fj = face_json(&faces[i]);
        /* Each face's chip: its quality is measured on it (about 1 ms a
         * face, README), and the same bytes are the chip asked for. */
        unsigned char chip[FV_CHIP_SIZE * FV_CHIP_SIZE * 3];
        if (fv_face_chip(r->srv->engine, img, &faces[i], chip) == FV_OK) {
            add_quality(fj, &faces[i], opt.detector, chip);
            if (chips) add_chip(fj, r->srv->engine, img, &faces[i], chip);
        }
        json_array_append_new(arr, fj);
    }
    double qms = now_ms() - t2;
    /* count is every face found; faces holds the max_faces first (the
     * largest), and truncated says when that left some out. */
    fvs_reply(out, 200,
              json_pack("{s:o, s:I, s:b, s:i, s:{s:i, s:i}, s:s, s:{s:f, s:f, s:f, s:f}}", "faces",
                        arr, "count", (json_int_t)n, "truncated", n > cap, "max_faces", (int)cap,
                        "image", "width", img->width, "height", img->height, "detector",
                        fv_detector_name(opt.detector), "timings_ms", "decode", dec, "detect", det,
                        "quality", qms, "total", now_ms() - t0));
    free(faces);
    drop_images(r, &img, 1, held);
}

static json_t *used_face_json(const fv_face_result *fr) {
    json_t *o = face_json(&fr->face);
    json_object_set_new(o, "faces_detected", json_integer((json_int_t)fr->faces));
    json_object_set_new(o, "quality", quality_json(&fr->quality));
    return o;
}

static void h_verify(fvs_req *r, fvs_resp *out) {
    if (need_engine(r, out)) return;
    const fv_model *m = NULL;
    if (coll_model(r, &m, out)) return;
    fv_verify_options opt;
    fv_verify_options_init(&opt);
    op_point op;
    if (get_operating_point(r, &op, out) || get_detect_options(r, &opt.detect, out)) return;
    /* fv_verify takes one or the other and picks the fmr's threshold for
     * the pair's quality */
    opt.fmr = op.fmr;
    opt.threshold = op.fmr > 0 ? 0 : op.threshold;
    double t0 = now_ms(), dms[2] = {0, 0};
    fv_image *ab[2] = {NULL, NULL};
    static const char *const names[2] = {"image_a", "image_b"};
    uint64_t held = 0;
    /* both at once: one reservation for the pair, so two requests can
     * never each hold one image's share while waiting for the other's */
    if (load_images(r, names, 2, &opt.detect, ab, dms, NULL, &held, out)) return;
    fv_image *a = ab[0], *b = ab[1];
    double da = dms[0], db = dms[1];
    fv_verify_result res;
    char err[256] = "";
    opt.model = m; /* the collection's model; NULL: the ResNet */
    fv_status st = fv_verify(r->srv->engine, a, b, &opt, &res, err, sizeof err);
    json_t *fa = NULL, *fb = NULL;
    if (st == FV_OK) {
        fa = used_face_json(&res.a);
        fb = used_face_json(&res.b);
        if (want_chips(r)) {
            add_chip(fa, r->srv->engine, a, &res.a.face, NULL);
            add_chip(fb, r->srv->engine, b, &res.b.face, NULL);
        }
    }
    drop_images(r, ab, 2, held);
    if (st != FV_OK) {
        fvs_status_error(out, st, err);
        return;
    }
    fv_timings t = res.a.timings;
    t.detect_ms += res.b.timings.detect_ms;
    t.landmarks_ms += res.b.timings.landmarks_ms;
    t.chip_ms += res.b.timings.chip_ms;
    t.embed_ms += res.b.timings.embed_ms;
    json_t *o =
        json_pack("{s:{s:o, s:o}, s:s, s:s, s:o}", "faces", "a", fa, "b", fb, "model", res.model,
                  "detector", res.detector, "timings_ms", timings_json(&t, da + db, now_ms() - t0));
    json_t *est = res.estimated_fmr >= 0 ? json_real(res.estimated_fmr) : json_null();
    fvs_reply(out, 200, add_decision(o, &op, res.distance, res.threshold, est));
}

/* Two caller-held embeddings carry no faces, so no quality: the pair is
 * taken as of quality 1 (the calibration's best bin), which is what a
 * caller embedding good photos gets from /verify. */
static void h_verify_embeddings(fvs_req *r, fvs_resp *out) {
    float a[FV_EMBED_DIM], b[FV_EMBED_DIM];
    op_point op;
    if (get_operating_point(r, &op, out)) return;
    if (!r->json) {
        fvs_error(out, 400, "validation_error", "expected a JSON body");
        return;
    }
    if (check_model_field(r, out) ||
        parse_embedding(json_object_get(r->json, "embedding_a"), "embedding_a", a, out) ||
        parse_embedding(json_object_get(r->json, "embedding_b"), "embedding_b", b, out))
        return;
    float d = fv_distance(a, b), t = op_threshold(r, &op, 1.0f);
    fvs_reply(out, 200,
              add_decision(json_pack("{s:s}", "model", r->coll.model), &op, d, t,
                           estimated_fmr_json(r, d, 1.0f)));
}

/* Adds warning (taken; NULL: none) to answer o's "warnings" list (made
 * when absent) and returns o (NULL when o is: fvs_reply then answers 500). */
static json_t *add_warning(json_t *o, json_t *warning) {
    json_t *list = o ? json_object_get(o, "warnings") : NULL;
    if (o && warning && json_is_array(list))
        json_array_append_new(list, warning);
    else if (o && warning)
        json_object_set_new(o, "warnings", json_pack("[o]", warning));
    else
        json_decref(warning);
    return o;
}

/* How one identify request decides: the k-NN vote at threshold t (fpir
 * 0), or open set at false-positive identification rate fpir. */
typedef struct id_mode {
    float t;
    int top_k, k;
    double fpir;
} id_mode;

/* Whether the collection's model has an FPIR calibration (the plain
 * ResNet has; trained models do not). */
static int openset_calibrated(const fvs_req *r) {
    float d = 0.5f;
    fv_openset_decision dec;
    return fv_openset_decide(r->coll.model, &d, 1, 1, FV_DEFAULT_FPIR, &dec) != FV_E_UNSUPPORTED;
}

/* Today's parameters ("threshold", "k") keep the k-NN vote; otherwise a
 * calibrated model decides open set at the request's "fpir", else the
 * collection's, else the server's --default-fpir (0 there: the vote).  An
 * "fpir" next to threshold or k, or for a model without a calibration,
 * is a 400: deciding otherwise than asked would be a silent lie. */
static int search_params(fvs_req *r, id_mode *m, fvs_resp *out) {
    char buf[64];
    int knn =
        fvs_req_text(r, "threshold", buf, sizeof buf) || fvs_req_text(r, "k", buf, sizeof buf);
    double f = -1;
    m->top_k = 5;
    m->k = 3;
    m->fpir = 0;
    if (get_threshold(r, &m->t, out) || get_int(r, "top_k", 1, FVS_TOP_K_MAX, &m->top_k, out) ||
        get_int(r, "k", 1, FVS_K_MAX, &m->k, out) ||
        fvs_req_number(r, "fpir", FVS_FPIR_MIN, FVS_FPIR_MAX, &f, out))
        return -1;
    if (f > 0 && knn) {
        fvs_error(out, 400, "validation_error",
                  "fpir, threshold, k: give a false-positive identification rate or the k-NN "
                  "vote's threshold and k, not both");
        return -1;
    }
    int calibrated = openset_calibrated(r);
    if (f > 0 && !calibrated) {
        fvs_error(out, 400, "validation_error",
                  "fpir: no false-positive-identification-rate calibration for model %s; give a "
                  "threshold or k",
                  r->coll.model);
        return -1;
    }
    if (knn || !calibrated) return 0;
    m->fpir = f > 0 ? f : r->coll.fpir > 0 ? r->coll.fpir : r->srv->cfg.default_fpir;
    return 0;
}

/* The request-level fields of an identify answer after its results:
 * the decision, and the k-NN vote's parameters or the open set's rate. */
static json_t *mode_json(const id_mode *m, const char *model) {
    if (m->fpir > 0)
        return json_pack("{s:s, s:f, s:i, s:s}", "decision", "open_set", "fpir", m->fpir, "top_k",
                         m->top_k, "model", model);
    return json_pack("{s:s, s:f, s:i, s:i, s:s}", "decision", "knn_vote", "threshold", (double)m->t,
                     "k", m->k, "top_k", m->top_k, "model", model);
}

/* Embeds n chips with the collection's model into out (n x FV_EMBED_DIM:
 * a trained model's dim values, then zeros, as stored templates are). */
static fv_status embed_chips(const fv_engine *eng, const fv_model *m, const unsigned char *chips,
                             size_t n, float *out, char *err, size_t errlen) {
    size_t dim = m ? (size_t)fv_model_dim(m) : FV_EMBED_DIM;
    if (dim == FV_EMBED_DIM) return fv_model_embed_chips(eng, m, chips, n, out, err, errlen);
    float *tmp = malloc(n * dim * sizeof(float));
    if (!tmp) return FV_E_NO_MEMORY;
    fv_status st = fv_model_embed_chips(eng, m, chips, n, tmp, err, errlen);
    memset(out, 0, n * FV_EMBED_DIM * sizeof(float));
    for (size_t i = 0; st == FV_OK && i < n; i++)
        memcpy(out + i * FV_EMBED_DIM, tmp + i * dim, dim * sizeof(float));
    free(tmp);
    return st;
}

/* Decodes the photo in field "image" and detects every face of it (at
 * most --max-faces: more is 422 too_many_faces), each embedded with the
 * collection's model m: *facesp (n faces) and *emb (n x FV_EMBED_DIM),
 * both the caller's to free, and
 * *extras, one object per face with what its answer takes from its chip,
 * made before the chips go: its quality and, when asked, the chip itself.
 * ms: the decode's, the detection's and the embedding's times; mac (may
 * be NULL): the photo's stored fingerprint (load_images).  No face is
 * FV_E_NO_FACE.  0, or -1 after an error in out (*facesp, *emb, *extras
 * NULL). */
static int photo_faces(fvs_req *r, const fv_model *m, const fv_detect_options *opt, char *mac,
                       fv_face **facesp, size_t *n, float **emb, json_t **extras, double ms[3],
                       fvs_resp *out) {
    const char *name = "image";
    fv_image *img = NULL;
    uint64_t held = 0;
    char err[256] = "";
    *facesp = NULL;
    *emb = NULL;
    *extras = NULL;
    *n = 0;
    if (load_images(r, &name, 1, opt, &img, &ms[0], mac, &held, out)) return -1;
    /* every face, its chips embedded as one batch; a crowd past
     * --max-faces is refused rather than cut short */
    const size_t cap = max_faces(r);
    fv_face *faces = NULL;
    double t1 = now_ms();
    fv_status st = detect_upto(r, img, opt, cap, &faces, n, err, sizeof err);
    ms[1] = now_ms() - t1;
    if (st == FV_OK && *n > cap) {
        free(faces);
        drop_images(r, &img, 1, held);
        fvs_error(out, 422, "too_many_faces",
                  "image: %zu faces found; at most %zu faces per photo (the server's "
                  "--max-faces)",
                  *n, cap);
        *n = 0;
        return -1;
    }
    if (st == FV_OK && *n == 0) {
        st = FV_E_NO_FACE;
        snprintf(err, sizeof err, "image: no face found");
    }
    unsigned char *chips = NULL;
    float *e = NULL;
    double t2 = now_ms();
    if (st == FV_OK) {
        chips = malloc(*n * FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
        e = malloc(*n * FV_EMBED_DIM * sizeof(float));
        if (!chips || !e) st = FV_E_NO_MEMORY;
        for (size_t i = 0; st == FV_OK && i < *n; i++)
            st = fv_face_chip(r->srv->engine, img, &faces[i],
                              chips + i * FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
        if (st == FV_OK) st = embed_chips(r->srv->engine, m, chips, *n, e, err, sizeof err);
    }
    ms[2] = now_ms() - t2;
    drop_images(r, &img, 1, held);
    json_t *x = st == FV_OK ? json_array() : NULL;
    int with_chips = want_chips(r);
    for (size_t i = 0; x && i < *n; i++) {
        const unsigned char *chip = chips + i * FV_CHIP_SIZE * FV_CHIP_SIZE * 3;
        json_t *one = json_object();
        add_quality(one, &faces[i], opt->detector, chip);
        json_t *u = with_chips ? fvs_chip_data_url(chip, FV_CHIP_SIZE, FV_CHIP_SIZE) : NULL;
        if (u) json_object_set_new(one, "chip", u);
        json_array_append_new(x, one);
    }
    free(chips);
    if (st != FV_OK) {
        free(e);
        free(faces);
        *n = 0;
        fvs_status_error(out, st, err);
        return -1;
    }
    *facesp = faces;
    *emb = e;
    *extras = x;
    return 0;
}

/* How r's searches apply corrections (corrections.h): the radius for the
 * collection's model (its threshold where it has no calibration). */
static fvs_correction_opts correction_opts(const fvs_req *r) {
    fvs_correction_opts co = {fvs_correction_radius(r->coll.model, coll_threshold(r)), 0, ""};
    return co;
}

static void h_identify(fvs_req *r, fvs_resp *out) {
    if (need_engine(r, out)) return;
    const fv_model *m = NULL;
    if (coll_model(r, &m, out)) return;
    id_mode md;
    if (search_params(r, &md, out)) return;
    double t0 = now_ms(), ms[3] = {0, 0, 0};
    fv_detect_options opt;
    fv_face *faces = NULL;
    size_t n = 0;
    char err[256] = "";
    float *emb = NULL;
    json_t *extras = NULL;
    if (get_detect_options(r, &opt, out) ||
        photo_faces(r, m, &opt, NULL, &faces, &n, &emb, &extras, ms, out))
        return;
    json_t *results = NULL, *warning = NULL;
    double t3 = now_ms();
    fvs_correction_opts co = correction_opts(r);
    int rc = fvs_index_search_corrected(r->srv->index, &r->coll, emb, n, md.t, md.top_k, md.k,
                                        md.fpir, &co, &results, &warning, err, sizeof err);
    double search_ms = now_ms() - t3;
    free(emb);
    if (rc) {
        json_decref(extras);
        free(faces);
        db_error(out, err);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *fj = face_json(&faces[i]);
        json_t *x = json_array_get(extras, i);
        if (x) json_object_update(fj, x);
        json_object_update(json_array_get(results, i), fj);
        json_decref(fj);
    }
    json_decref(extras);
    free(faces);
    json_t *o = mode_json(&md, r->coll.model);
    if (o)
        json_object_update_new(o, json_pack("{s:o, s:I, s:{s:f, s:f, s:f, s:f, s:f}}", "faces",
                                            results, "count", (json_int_t)n, "timings_ms", "decode",
                                            ms[0], "detect", ms[1], "embed", ms[2], "search",
                                            search_ms, "total", now_ms() - t0));
    else
        json_decref(results);
    fvs_reply(out, 200,
              add_warning(add_warning(o, warning), fvs_corrections_warning(co.unreadable, co.why)));
}

static void h_identify_embeddings(fvs_req *r, fvs_resp *out) {
    id_mode md;
    if (search_params(r, &md, out)) return;
    if (!r->json) {
        fvs_error(out, 400, "validation_error", "expected a JSON body");
        return;
    }
    if (check_model_field(r, out)) return;
    json_t *one = json_object_get(r->json, "embedding");
    json_t *many = json_object_get(r->json, "embeddings");
    size_t n = one ? 1 : json_array_size(many);
    if ((one && many) || n == 0 || n > MAX_QUERIES || (!one && !json_is_array(many))) {
        fvs_error(out, 400, "validation_error",
                  "expected 'embedding' (one vector) or 'embeddings' (1..%d vectors)", MAX_QUERIES);
        return;
    }
    float *q = malloc(n * FV_EMBED_DIM * sizeof(float));
    if (!q) {
        fvs_error(out, 503, "unavailable", "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (parse_embedding(one ? one : json_array_get(many, i), one ? "embedding" : "embeddings",
                            q + i * FV_EMBED_DIM, out)) {
            free(q);
            return;
        }
    }
    json_t *results = NULL, *warning = NULL;
    char err[256];
    fvs_correction_opts co = correction_opts(r);
    int rc = fvs_index_search_corrected(r->srv->index, &r->coll, q, n, md.t, md.top_k, md.k,
                                        md.fpir, &co, &results, &warning, err, sizeof err);
    free(q);
    if (rc) {
        db_error(out, err);
        return;
    }
    json_t *o = mode_json(&md, r->coll.model);
    if (o)
        json_object_set_new(o, "results", results);
    else
        json_decref(results);
    fvs_reply(out, 200,
              add_warning(add_warning(o, warning), fvs_corrections_warning(co.unreadable, co.why)));
}

/* 0 when meta (an object) is within the caps (store.h), else -1 after a
 * 400 validation_error naming the cap. */
static int check_metadata(const json_t *meta, fvs_resp *out) {
    char err[160];
    if (fvs_metadata_check(meta, err, sizeof err) == 0) return 0;
    fvs_error(out, 400, "validation_error", "%s", err);
    return -1;
}

/* A new subject's name (field, as given: form text or the JSON value nj,
 * may be NULL) and the JSON body's "metadata" (*meta: NULL when absent
 * or null): 0, or -1 after a 400. */
static int check_subject_fields(fvs_req *r, const char *field, const char *name, const json_t *nj,
                                const json_t **meta, fvs_resp *out) {
    if (!name || (nj && !json_is_string(nj)) || !*name || strlen(name) > FVS_NAME_MAX) {
        fvs_error(out, 400, "validation_error", "%s: a string of 1..%d bytes of UTF-8 is required",
                  field, FVS_NAME_MAX);
        return -1;
    }
    if (!fvs_utf8_valid(name, strlen(name)) || (nj && json_string_length(nj) != strlen(name))) {
        /* form fields are raw bytes; JSON strings may hold \u0000 */
        fvs_error(out, 400, "validation_error", "%s: not valid UTF-8, or holds a NUL", field);
        return -1;
    }
    *meta = r->json ? json_object_get(r->json, "metadata") : NULL;
    if (*meta && json_is_null(*meta)) *meta = NULL;
    if (*meta && !json_is_object(*meta)) {
        fvs_error(out, 400, "validation_error", "metadata: expected a JSON object");
        return -1;
    }
    return *meta ? check_metadata(*meta, out) : 0;
}

static void h_subjects_create(fvs_req *r, fvs_resp *out) {
    char buf[64];
    const char *name = fvs_req_text(r, "name", buf, sizeof buf);
    json_t *nj = r->json ? json_object_get(r->json, "name") : NULL;
    const json_t *meta = NULL;
    if (check_subject_fields(r, "name", name, nj, &meta, out)) return;
    json_t *subj = NULL;
    char err[256];
    int rc = fvs_subject_create(r->srv->store, r->coll.id, name, meta, &subj, err, sizeof err);
    if (rc < 0)
        db_error(out, err);
    else if (rc > 0)
        fvs_error(out, 409, "conflict", "a subject named '%s' already exists", name);
    else
        fvs_reply(out, 201, subj);
}

static void h_subjects_list(fvs_req *r, fvs_resp *out) {
    int limit = 50, offset = 0;
    if (get_int(r, "limit", 1, 1000, &limit, out) ||
        get_int(r, "offset", 0, 1000000000, &offset, out))
        return;
    json_t *res = NULL;
    int64_t count = 0;
    char err[256];
    if (fvs_subject_list(r->srv->store, r->coll.id, limit, offset, &res, &count, err, sizeof err)) {
        db_error(out, err);
        return;
    }
    fvs_reply(out, 200,
              json_pack("{s:I, s:i, s:i, s:o}", "count", (json_int_t)count, "limit", limit,
                        "offset", offset, "results", res));
}

static void h_subject_get(fvs_req *r, fvs_resp *out) {
    int64_t id = r->path_id;
    json_t *subj = NULL;
    char err[256];
    int rc = fvs_subject_get(r->srv->store, r->coll.id, id, &subj, err, sizeof err);
    if (rc < 0)
        db_error(out, err);
    else if (rc > 0)
        fvs_error(out, 404, "not_found", "no subject %" PRId64, id);
    else
        fvs_reply(out, 200, subj);
}

static void h_subject_delete(fvs_req *r, fvs_resp *out) {
    int64_t id = r->path_id;
    char err[256];
    int rc = fvs_subject_delete(r->srv->store, r->coll.id, id, err, sizeof err);
    if (rc < 0)
        db_error(out, err);
    else if (rc > 0)
        fvs_error(out, 404, "not_found", "no subject %" PRId64, id);
    else
        fvs_reply(out, 200, json_pack("{s:I, s:b}", "id", (json_int_t)id, "deleted", 1));
}

/* Loads the subject (404 when absent) for the /subjects/{id}/... routes. */
static int subject_or_404(fvs_req *r, int64_t id, json_t **subj, fvs_resp *out) {
    char err[256];
    int rc = fvs_subject_get(r->srv->store, r->coll.id, id, subj, err, sizeof err);
    if (rc < 0) db_error(out, err);
    if (rc > 0) fvs_error(out, 404, "not_found", "no subject %" PRId64, id);
    return rc ? -1 : 0;
}

/* Detects and embeds the one face of the image in field name ("image"
 * for the single-photo endpoints) to enroll or verify; mac (may be NULL)
 * receives the image's stored fingerprint (store.h fvs_store_image_mac,
 * "" when none is kept). */
static int embed_field(fvs_req *r, const char *name, int strict, fv_face_result *fr,
                       double *decode_ms, char mac[65], fvs_resp *out) {
    fv_detect_options opt;
    const fv_model *m = NULL;
    if (coll_model(r, &m, out) || get_detect_options(r, &opt, out)) return -1;
    fv_image *img = NULL;
    uint64_t held = 0;
    if (load_images(r, &name, 1, &opt, &img, decode_ms, mac, &held, out)) return -1;
    char err[256] = "";
    fv_status st = fv_model_embed_face(r->srv->engine, m, img, &opt, strict, fr, err, sizeof err);
    if (st == FV_E_MULTIPLE_FACES)
        snprintf(err, sizeof err, "%zu faces found; send a photo of one person or face=largest",
                 fr->faces);
    drop_images(r, &img, 1, held);
    if (st != FV_OK) {
        char msg[320];
        size_t nl = strlen(name);
        int named = strncmp(err, name, nl) == 0 && err[nl] == ':';
        snprintf(msg, sizeof msg, "%s%s%s", named ? "" : name, named ? "" : ": ",
                 err[0] ? err : fv_strerror(st));
        fvs_status_error(out, st, msg);
        return -1;
    }
    return 0;
}

static int embed_probe(fvs_req *r, int strict, fv_face_result *fr, double *decode_ms, char mac[65],
                       fvs_resp *out) {
    return embed_field(r, "image", strict, fr, decode_ms, mac, out);
}

/* ------------------------------------------------------------ enrolment
 *
 * Before a face is stored: the quality gate (a face poorer than the
 * collection's min_quality, else --min-quality, answers 422 low_quality
 * unless "force") and the duplicate check (the face matches a template of
 * another subject at FMR FVS_DUP_FMR, enrol.h: a "duplicate" warning, or 409 with
 * on_duplicate=reject).  A bare embedding has no quality: no gate, and it
 * counts as quality 1 in the duplicate check, as templates without one do. */

typedef struct enrol_opts {
    int force;  /* enrol below the quality gate */
    int reject; /* on_duplicate=reject: 409 instead of a warning */
} enrol_opts;

/* Reads "force" (JSON true/false, or the text true/false/1/0) and
 * "on_duplicate" ("warn", default, or "reject"); 400 for anything else. */
static int get_enrol_opts(fvs_req *r, enrol_opts *o, fvs_resp *out) {
    char buf[64];
    o->force = o->reject = 0;
    const char *f = fvs_req_text(r, "force", buf, sizeof buf);
    if (f && strcmp(f, "false") && strcmp(f, "0")) {
        if (strcmp(f, "true") && strcmp(f, "1")) {
            fvs_error(out, 400, "validation_error", "force: expected true or false");
            return -1;
        }
        o->force = 1;
    }
    const char *d = fvs_req_text(r, "on_duplicate", buf, sizeof buf);
    if (d && strcmp(d, "warn") && strcmp(d, "reject")) {
        fvs_error(out, 400, "validation_error", "on_duplicate: expected 'warn' or 'reject'");
        return -1;
    }
    o->reject = d && strcmp(d, "reject") == 0;
    return 0;
}

/* The enrolment gate in force: the collection's, else the server's. */
static double gate_of(const fvs_req *r) {
    return fvs_enrol_gate(&r->coll, r->srv->cfg.min_quality);
}

/* 422 low_quality naming q's reasons, with q itself. */
static void low_quality_error(fvs_resp *out, const fv_quality *q, double gate) {
    json_t *qj = quality_json(q);
    char msg[200];
    snprintf(msg, sizeof msg,
             "face quality %.3f is below this collection's minimum %.3f: send a sharper, larger, "
             "better lit frontal photo, or force=true to enrol it anyway",
             (double)q->score, gate);
    fvs_reply(out, 422,
              json_pack("{s:{s:s, s:s, s:O, s:o}}", "error", "code", "low_quality", "message", msg,
                        "reasons", json_object_get(qj, "reasons"), "quality", qj));
}

/* Looks for a duplicate of emb (enrol.h) in r's collection; -1 after a
 * database error in out. */
static int find_duplicate(fvs_req *r, int64_t sid, const float *emb, double q, fvs_dup_hit *hit,
                          fvs_resp *out) {
    char err[256];
    if (fvs_enrol_find_duplicate(r->srv->store, r->srv->index, &r->coll, sid, emb, q, hit, err,
                                 sizeof err) == 0)
        return 0;
    db_error(out, err);
    return -1;
}

/* The hit as the answer names it: {"subject": {id, name}, "face_id",
 * "distance", "threshold", "fmr"}, plus code and message. */
static json_t *dup_json(const fvs_dup_hit *h, const char *message) {
    return json_pack("{s:s, s:s, s:{s:I, s:s}, s:I, s:f, s:f, s:f}", "code", "duplicate", "message",
                     message, "subject", "id", (json_int_t)h->subject, "name", h->name, "face_id",
                     (json_int_t)h->face, "distance", (double)h->distance, "threshold",
                     (double)h->threshold, "fmr", FVS_DUP_FMR);
}

/* The duplicate check of enrolment into sid: 0 to go on (*warning: NULL
 * or the warning to add), -1 after a 409 or an error in out. */
static int check_duplicate(fvs_req *r, int64_t sid, const float *emb, double q, const enrol_opts *o,
                           json_t **warning, fvs_resp *out) {
    fvs_dup_hit h;
    *warning = NULL;
    if (find_duplicate(r, sid, emb, q, &h, out)) return -1;
    if (!h.subject) return 0;
    char msg[FVS_NAME_MAX + 160];
    snprintf(msg, sizeof msg,
             "this face matches subject %" PRId64 " (%s) at a false-match rate of %g: the same "
             "person enrolled twice?",
             h.subject, h.name, FVS_DUP_FMR);
    if (!o->reject) {
        *warning = dup_json(&h, msg);
        return 0;
    }
    json_t *e = dup_json(&h, msg);
    fvs_reply(out, 409, e ? json_pack("{s:o}", "error", e) : NULL);
    return -1;
}

/* Stores one face and answers 201 with it plus extra's members (taken;
 * may be NULL) and warning (taken; may be NULL); 404: no such subject. */
static void insert_face(fvs_req *r, fvs_resp *out, int64_t sid, const fvs_face_row *row,
                        size_t faces_detected, json_t *extra, json_t *warning) {
    json_t *fj = NULL;
    char err[256];
    int rc = fvs_face_insert(r->srv->store, r->coll.id, sid, row, &fj, err, sizeof err);
    if (rc < 0)
        db_error(out, err);
    else if (rc > 0)
        fvs_error(out, 404, "not_found", "no subject %" PRId64, sid);
    else {
        json_object_set_new(fj, "faces_detected", json_integer((json_int_t)faces_detected));
        if (extra) json_object_update(fj, extra);
        fvs_reply(out, 201, add_warning(fj, warning));
        warning = NULL;
    }
    json_decref(extra);
    json_decref(warning);
}

/* Enrols the embedding ej (a JSON array, named name in errors) into sid;
 * out as POST /subjects/{id}/faces answers.  faces_detected is 0: there
 * was no image, and no quality (stored NULL). */
static void enrol_embedding(fvs_req *r, fvs_resp *out, int64_t sid, const json_t *ej,
                            const char *name, const enrol_opts *o) {
    float emb[FV_EMBED_DIM];
    json_t *warning = NULL;
    if (parse_embedding(ej, name, emb, out) || check_duplicate(r, sid, emb, -1, o, &warning, out))
        return;
    fvs_face_row row = {r->coll.model, emb, 0, 0, 0, 0, 0, NULL, -1, NULL, 0}; /* no quality */
    insert_face(r, out, sid, &row, 0, NULL, warning);
}

/* Enrolment of a precomputed embedding (JSON {"embedding": [128
 * numbers]}): bulk imports and tests, without the neural network. */
static void h_face_enroll_embedding(fvs_req *r, fvs_resp *out, int64_t sid) {
    enrol_opts o;
    if (get_enrol_opts(r, &o, out) || check_model_field(r, out)) return;
    enrol_embedding(r, out, sid, json_object_get(r->json, "embedding"), "embedding", &o);
}

/* Enrols the photo in field name into sid (whose existence the caller
 * checked), under the quality gate and the duplicate check; out as POST
 * /subjects/{id}/faces answers. */
static void enrol_image(fvs_req *r, fvs_resp *out, int64_t sid, const char *name, int strict,
                        const enrol_opts *o) {
    fv_face_result fr;
    char mac[65] = "";
    double dec = 0, gate = gate_of(r);
    if (embed_field(r, name, strict, &fr, &dec, mac, out)) return;
    int below = fr.quality.score < gate;
    if (below && !o->force) {
        low_quality_error(out, &fr.quality, gate);
        return;
    }
    json_t *warning = NULL;
    if (check_duplicate(r, sid, fr.embedding, fr.quality.score, o, &warning, out)) return;
    /* The image's keyed fingerprint, or none without a template key. */
    fvs_face_row row = fvs_enrol_row(r->coll.model, &fr, mac[0] ? mac : NULL, NULL);
    json_t *extra = json_pack("{s:o, s:f, s:b}", "quality", quality_json(&fr.quality),
                              "min_quality", gate, "forced", below);
    insert_face(r, out, sid, &row, fr.faces, extra, warning);
}

/* An option of two values: 0 for first (also when absent), 1 for
 * second, -1 after a 400 naming both. */
static int get_choice(fvs_req *r, const char *name, const char *first, const char *second,
                      fvs_resp *out) {
    char buf[64];
    const char *v = fvs_req_text(r, name, buf, sizeof buf);
    if (v && strcmp(v, first) && strcmp(v, second)) {
        fvs_error(out, 400, "validation_error", "%s: expected '%s' or '%s'", name, first, second);
        return -1;
    }
    return v && strcmp(v, second) == 0;
}

/* The "face" option: 1 for single (strict, the default), 0 for largest,
 * -1 after a 400. */
static int get_strict(fvs_req *r, fvs_resp *out) {
    int c = get_choice(r, "face", "single", "largest", out);
    return c < 0 ? -1 : !c;
}

static void h_face_enroll(fvs_req *r, fvs_resp *out) {
    int64_t sid = r->path_id;
    if (r->json && json_object_get(r->json, "embedding")) {
        h_face_enroll_embedding(r, out, sid);
        return;
    }
    if (need_engine(r, out)) return;
    json_t *subj = NULL;
    if (subject_or_404(r, sid, &subj, out)) return;
    json_decref(subj);
    int strict = get_strict(r, out);
    enrol_opts o;
    if (strict < 0 || get_enrol_opts(r, &o, out)) return;
    enrol_image(r, out, sid, "image", strict, &o);
}

/* Most embeddings one batch request may carry (images are bounded by
 * the form's FVS_MAX_FIELDS and the body limit). */
#define BATCH_MAX_EMBEDDINGS 1000

/* Adds item i's result to results: its field (images) and status, and
 * the enrolled face (201) or the error, as the single enrolment would
 * have answered.  Takes one's contents. */
static int batch_result(json_t *results, size_t i, const char *field, fvs_resp *one) {
    int ok = one->status == 201;
    json_t *res = json_pack("{s:I, s:i}", "index", (json_int_t)i, "status", one->status);
    if (res && field) json_object_set_new(res, "field", json_string(field));
    json_t *err = one->body ? json_object_get(one->body, "error") : NULL;
    if (res && ok && one->body)
        json_object_set(res, "face", one->body);
    else if (res)
        json_object_set_new(
            res, "error",
            err ? json_incref(err)
                : json_pack("{s:s, s:s}", "code", "internal_error", "message", "no answer"));
    json_array_append_new(results, res);
    fvs_resp_free(one);
    return ok;
}

/* POST /subjects/{id}/faces/batch: many photos (multipart parts whose
 * names start with "image": image1, image2, ...) or embeddings (JSON
 * {"embeddings": [[128 numbers], ...]}) enrolled one after another into
 * one subject with the single enrolment's rules and options.  One 200
 * answer with a result per item, in order: its status and the face, or
 * the typed error the single endpoint would have answered for it.  A
 * request-wide problem (no such subject, no items, bad option) is the
 * request's own 4xx. */
static void h_face_batch(fvs_req *r, fvs_resp *out) {
    int64_t sid = r->path_id;
    const json_t *embs = r->json ? json_object_get(r->json, "embeddings") : NULL;
    const char *fields[FVS_MAX_FIELDS];
    size_t n = 0;
    enrol_opts o;
    int strict = 1;
    if (embs) {
        if (!json_is_array(embs) || json_array_size(embs) == 0 ||
            json_array_size(embs) > BATCH_MAX_EMBEDDINGS) {
            fvs_error(out, 400, "validation_error",
                      "embeddings: expected an array of 1..%d embeddings", BATCH_MAX_EMBEDDINGS);
            return;
        }
        if (check_model_field(r, out)) return;
        n = json_array_size(embs);
    } else {
        for (int i = 0; i < r->nfields; i++)
            if (strncmp(r->fields[i].name, "image", 5) == 0) fields[n++] = r->fields[i].name;
        if (n == 0) {
            fvs_error(out, 400, "validation_error",
                      "send photos as multipart parts image1, image2, ... or JSON "
                      "{\"embeddings\": [...]}");
            return;
        }
        if (need_engine(r, out) || (strict = get_strict(r, out)) < 0) return;
    }
    if (get_enrol_opts(r, &o, out)) return;
    json_t *subj = NULL;
    if (subject_or_404(r, sid, &subj, out)) return;
    json_decref(subj);
    json_t *results = json_array();
    size_t enrolled = 0;
    for (size_t i = 0; results && i < n; i++) {
        fvs_resp one;
        memset(&one, 0, sizeof one);
        char name[48];
        snprintf(name, sizeof name, "embeddings[%zu]", i);
        if (embs)
            enrol_embedding(r, &one, sid, json_array_get(embs, i), name, &o);
        else
            enrol_image(r, &one, sid, fields[i], strict, &o);
        enrolled += (size_t)batch_result(results, i, embs ? NULL : fields[i], &one);
    }
    fvs_reply(out, 200,
              results ? json_pack("{s:I, s:I, s:I, s:o}", "count", (json_int_t)n, "enrolled",
                                  (json_int_t)enrolled, "failed", (json_int_t)(n - enrolled),
                                  "results", results)
                      : NULL);
}

/* ------------------------------------------------------------ clustering
 *
 * POST /faces/cluster: "who is in these photos?"  The faces (every face of
 * every photo image1..imageN, or the embeddings of {"embeddings": [...]})
 * are grouped by fvsearch_cluster (src/search/cluster.h): Chinese whispers
 * over the nearest-neighbour graph, strictness "fmr" (default
 * FVSEARCH_CLUSTER_DEFAULT_FMR, the collection model's calibration) and
 * "min_cluster_size" (default 2).  Photos are decoded one at a time under
 * the memory budget (load_image), so a request holds one image's
 * reservation at most; a photo that fails is listed under "skipped" and
 * the others are clustered, except when the server is overloaded (503:
 * retry the whole request). */

/* Most embeddings one cluster request may carry: what the JSON parser's
 * cap of 65536 values a body (http.c) leaves room for, 128 each.  Larger
 * sets are a collection's own faces, clustered by source, not sent. */
#define CLUSTER_MAX_EMBEDDINGS 500
/* Faces one photo may add (a crowd photo's further faces are dropped). */
#define CLUSTER_FACES_PER_PHOTO 64

/* The clustering options of the request: "fmr" (400 without a calibration
 * for the collection's model) and "min_cluster_size". */
static int get_cluster_opts(fvs_req *r, fvsearch_cluster_opts *co, fvs_resp *out) {
    double fmr = FVSEARCH_CLUSTER_DEFAULT_FMR, mcs = FVSEARCH_CLUSTER_DEFAULT_MIN_SIZE;
    fvsearch_cluster_opts_init(co);
    if (fvs_req_number(r, "fmr", FV_FMR_MIN, FV_FMR_MAX, &fmr, out) ||
        fvs_req_number(r, "min_cluster_size", 1, FVSEARCH_CLUSTER_MAX_N, &mcs, out))
        return -1;
    if (mcs != (double)(size_t)mcs) {
        fvs_error(out, 400, "validation_error", "min_cluster_size: expected an integer");
        return -1;
    }
    co->fmr = fmr;
    co->min_cluster_size = (size_t)mcs;
    co->model_id = r->coll.model;
    float t;
    if (fvsearch_cluster_threshold(co, &t, NULL, 0)) {
        fvs_error(out, 400, "validation_error",
                  "fmr: no false-match-rate calibration for model %s to cluster with",
                  r->coll.model);
        return -1;
    }
    return 0;
}

/* The hook every source of faces ends in (photos, embeddings, and the
 * collection's unassigned faces): clusters the n embeddings emb (n x
 * FV_EMBED_DIM) whose descriptions are faces[i] (a JSON array of n
 * objects, taken), and answers 200 {"clusters": [[FACE, ...], ...],
 * "noise": [FACE, ...], "operating_point": {"fmr", "threshold"},
 * "method", "count"} plus extra's members (taken; may be NULL): clusters
 * largest first, faces in input order. */
static void cluster_answer(fvs_resp *out, const fvsearch_cluster_opts *co, const float *emb,
                           size_t n, json_t *faces, json_t *extra) {
    int32_t *label = malloc((n ? n : 1) * sizeof *label);
    size_t nc = 0;
    float t = 0;
    char err[256] = "";
    json_t *clusters = json_array(), *noise = json_array();
    if (!label || !faces || !clusters || !noise ||
        fvsearch_cluster_threshold(co, &t, err, sizeof err) ||
        fvsearch_cluster(emb, n, co, label, &nc, err, sizeof err)) {
        fvs_status_error(out, FV_E_NO_MEMORY, err[0] ? err : "out of memory");
    } else {
        for (size_t c = 0; c < nc; c++) json_array_append_new(clusters, json_array());
        for (size_t i = 0; i < n; i++)
            json_array_append(label[i] < 0 ? noise : json_array_get(clusters, (size_t)label[i]),
                              json_array_get(faces, i));
        json_t *res =
            json_pack("{s:O, s:O, s:{s:f, s:f}, s:s, s:I}", "clusters", clusters, "noise", noise,
                      "operating_point", "fmr", co->fmr, "threshold", (double)t, "method",
                      fvsearch_cluster_method_name(co->method), "count", (json_int_t)n);
        if (res && extra) json_object_update(res, extra);
        fvs_reply(out, 200, res);
    }
    json_decref(clusters);
    json_decref(noise);
    json_decref(faces);
    json_decref(extra);
    free(label);
}

/* Room for m more faces in *emb (cap in faces); -1 when out of memory. */
static int cluster_grow(float **emb, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    float *e = realloc(*emb, c * FV_EMBED_DIM * sizeof *e);
    if (!e) return -1;
    *emb = e;
    *cap = c;
    return 0;
}

/* Every face of photo field name: appended to *emb (n, cap) and faces;
 * 0 done (a failed photo goes to skipped), -1 after an answer in out that
 * ends the request (overloaded, out of memory). */
static int cluster_photo(fvs_req *r, const char *name, const fv_model *m,
                         const fv_detect_options *opt, float **emb, size_t *n, size_t *cap,
                         json_t *faces, json_t *skipped, fvs_resp *out) {
    fv_image *img = NULL;
    uint64_t held = 0;
    fvs_resp one;
    memset(&one, 0, sizeof one);
    if (load_image(r, name, opt, &img, NULL, &held, &one)) {
        if (one.status == 503) {
            *out = one;
            return -1;
        }
        json_t *e = one.body ? json_object_get(one.body, "error") : NULL;
        json_array_append_new(skipped, json_pack("{s:s, s:i, s:O}", "image", name, "status",
                                                 one.status, "error", e ? e : json_null()));
        fvs_resp_free(&one);
        return 0;
    }
    fv_face fs[CLUSTER_FACES_PER_PHOTO];
    size_t nf = 0;
    char err[256] = "";
    unsigned char *chips = NULL;
    fv_status st =
        fv_detect(r->srv->engine, img, opt, fs, CLUSTER_FACES_PER_PHOTO, &nf, err, sizeof err);
    if (nf > CLUSTER_FACES_PER_PHOTO) nf = CLUSTER_FACES_PER_PHOTO;
    if (st == FV_OK && nf) {
        chips = malloc(nf * FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
        if (!chips || cluster_grow(emb, cap, *n + nf)) st = FV_E_NO_MEMORY;
        for (size_t i = 0; st == FV_OK && i < nf; i++)
            st = fv_face_chip(r->srv->engine, img, &fs[i],
                              chips + i * FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
        if (st == FV_OK)
            st = fv_model_embed_chips(r->srv->engine, m, chips, nf, *emb + *n * FV_EMBED_DIM, err,
                                      sizeof err);
    }
    for (size_t i = 0; st == FV_OK && i < nf; i++) {
        json_t *f =
            json_pack("{s:s, s:I, s:{s:f, s:f, s:f, s:f}}", "image", name, "face", (json_int_t)i,
                      "box", "left", (double)fs[i].left, "top", (double)fs[i].top, "right",
                      (double)fs[i].right, "bottom", (double)fs[i].bottom);
        add_quality(f, &fs[i], opt->detector, chips + i * FV_CHIP_SIZE * FV_CHIP_SIZE * 3);
        json_array_append_new(faces, f);
    }
    drop_images(r, &img, 1, held);
    free(chips);
    if (st == FV_OK) {
        *n += nf;
        return 0;
    }
    if (st == FV_E_NO_MEMORY) {
        fvs_status_error(out, st, "out of memory");
        return -1;
    }
    json_array_append_new(skipped,
                          json_pack("{s:s, s:{s:s, s:s}}", "image", name, "error", "code",
                                    fv_status_name(st), "message", err[0] ? err : fv_strerror(st)));
    return 0;
}

/* The collection's unassigned faces gathered for clustering: those of
 * model, their templates (n x FV_EMBED_DIM, cap faces of room) and
 * descriptions. */
typedef struct unassigned_in {
    const char *model;
    float *emb;
    size_t n, cap;
    json_t *faces;
} unassigned_in;

/* fvs_faces_each's callback: appends one face of the model and its
 * {"face_id", "box"}. */
static int unassigned_in_row(void *ctx, const fvs_face_full *f) {
    unassigned_in *u = ctx;
    if (strcmp(f->model, u->model) != 0) return 0;
    if (cluster_grow(&u->emb, &u->cap, u->n + 1)) return 1;
    memcpy(u->emb + u->n * FV_EMBED_DIM, f->embedding, FV_EMBED_DIM * sizeof(float));
    u->n++;
    return json_array_append_new(
               u->faces, json_pack("{s:I, s:{s:f, s:f, s:f, s:f}}", "face_id", (json_int_t)f->id,
                                   "box", "left", (double)f->left, "top", (double)f->top, "right",
                                   (double)f->right, "bottom", (double)f->bottom))
               ? 1
               : 0;
}

/* {"source": "unassigned"}: the collection's faces without a subject
 * made by its model (POST /faces), each described as {"face_id",
 * "box"}, so that a cluster's face ids go to POST /faces/assign as they
 * are. */
static void cluster_source(fvs_req *r, fvs_resp *out, const fvsearch_cluster_opts *co,
                           const json_t *src) {
    if (!json_is_string(src) || strcmp(json_string_value(src), "unassigned") != 0) {
        fvs_error(out, 400, "validation_error",
                  "source: expected \"unassigned\" (the collection's faces without a subject)");
        return;
    }
    unassigned_in u = {r->coll.model, NULL, 0, 0, json_array()};
    char err[256] = "";
    if (!u.faces ||
        fvs_faces_each(r->srv->store, r->coll.id, 1, unassigned_in_row, &u, err, sizeof err)) {
        if (u.emb) sodium_memzero(u.emb, u.n * FV_EMBED_DIM * sizeof(float));
        free(u.emb);
        json_decref(u.faces);
        db_error(out, err[0] ? err : "out of memory");
        return;
    }
    cluster_answer(out, co, u.emb, u.n, u.faces, json_pack("{s:s}", "source", "unassigned"));
    if (u.emb) sodium_memzero(u.emb, u.n * FV_EMBED_DIM * sizeof(float));
    free(u.emb);
}

static void h_faces_cluster(fvs_req *r, fvs_resp *out) {
    fvsearch_cluster_opts co;
    if (get_cluster_opts(r, &co, out)) return;
    const json_t *src = r->json ? json_object_get(r->json, "source") : NULL;
    if (src) {
        cluster_source(r, out, &co, src);
        return;
    }
    const json_t *embs = r->json ? json_object_get(r->json, "embeddings") : NULL;
    if (embs) {
        if (!json_is_array(embs)) {
            fvs_error(out, 400, "validation_error",
                      "embeddings: expected an array of embeddings (arrays of %d numbers)",
                      FV_EMBED_DIM);
            return;
        }
        size_t n = json_array_size(embs);
        if (n > CLUSTER_MAX_EMBEDDINGS) {
            fvs_error(out, 413, "payload_too_large", "embeddings: %zu sent, at most %d per request",
                      n, CLUSTER_MAX_EMBEDDINGS);
            return;
        }
        if (check_model_field(r, out)) return;
        float *emb = malloc((n ? n : 1) * FV_EMBED_DIM * sizeof *emb);
        json_t *faces = json_array();
        if (!emb || !faces) {
            free(emb);
            json_decref(faces);
            fvs_status_error(out, FV_E_NO_MEMORY, "out of memory");
            return;
        }
        for (size_t i = 0; i < n; i++) {
            char name[48];
            snprintf(name, sizeof name, "embeddings[%zu]", i);
            if (parse_embedding(json_array_get(embs, i), name, emb + i * FV_EMBED_DIM, out)) {
                free(emb);
                json_decref(faces);
                return;
            }
            json_array_append_new(faces, json_pack("{s:I}", "embedding", (json_int_t)i));
        }
        cluster_answer(out, &co, emb, n, faces, NULL);
        free(emb);
        return;
    }
    const char *fields[FVS_MAX_FIELDS];
    size_t nfields = 0;
    for (int i = 0; i < r->nfields; i++)
        if (strncmp(r->fields[i].name, "image", 5) == 0) fields[nfields++] = r->fields[i].name;
    if (nfields == 0) {
        fvs_error(out, 400, "validation_error",
                  "send photos as multipart parts image1, image2, ... (at most %d parts), JSON "
                  "{\"embeddings\": [...]} (at most %d) or {\"source\": ...}",
                  FVS_MAX_FIELDS, CLUSTER_MAX_EMBEDDINGS);
        return;
    }
    fv_detect_options opt;
    const fv_model *m = NULL;
    if (need_engine(r, out) || coll_model(r, &m, out) || get_detect_options(r, &opt, out)) return;
    if (m && fv_model_dim(m) != FV_EMBED_DIM) {
        fvs_error(out, 400, "validation_error",
                  "this collection's model embeds into %d dimensions; clustering needs %d",
                  fv_model_dim(m), FV_EMBED_DIM);
        return;
    }
    float *emb = NULL;
    size_t n = 0, cap = 0;
    json_t *faces = json_array(), *skipped = json_array();
    for (size_t i = 0; faces && skipped && i < nfields; i++)
        if (cluster_photo(r, fields[i], m, &opt, &emb, &n, &cap, faces, skipped, out)) {
            free(emb);
            json_decref(faces);
            json_decref(skipped);
            return;
        }
    json_t *extra = json_pack("{s:o, s:I}", "skipped", skipped ? skipped : json_array(), "images",
                              (json_int_t)nfields);
    cluster_answer(out, &co, emb, n, faces, extra);
    free(emb);
}

static void h_face_list(fvs_req *r, fvs_resp *out) {
    int64_t sid = r->path_id;
    json_t *arr = NULL;
    char err[256];
    int rc = fvs_face_list(r->srv->store, r->coll.id, sid, &arr, err, sizeof err);
    if (rc < 0)
        db_error(out, err);
    else if (rc > 0)
        fvs_error(out, 404, "not_found", "no subject %" PRId64, sid);
    else
        fvs_reply(
            out, 200,
            json_pack("{s:I, s:o}", "count", (json_int_t)json_array_size(arr), "results", arr));
}

static void h_face_delete(fvs_req *r, fvs_resp *out) {
    int64_t sid = r->path_id, fid = r->path_face_id;
    char err[256];
    int rc = fvs_face_delete(r->srv->store, r->coll.id, sid, fid, err, sizeof err);
    if (rc < 0)
        db_error(out, err);
    else if (rc > 0)
        fvs_error(out, 404, "not_found", "no face %" PRId64 " for subject %" PRId64, fid, sid);
    else
        fvs_reply(out, 200, json_pack("{s:I, s:b}", "id", (json_int_t)fid, "deleted", 1));
}

/* ------------------------------------------------- unassigned faces and subject surgery
 *
 * A collection may hold faces without a subject (store.h FVS_UNASSIGNED):
 * every face of a camera's frame, say, kept to be clustered and named
 * later.  They are never searched, verified against or counted as
 * duplicates, so they pass no quality gate and no duplicate check here;
 * their quality is stored and answered so that a client can leave poor
 * ones out.  Naming (assign) moves faces, unassigned or of any subject,
 * into one subject in one transaction; merge moves all of one subject's
 * into another.  Every process's index follows through the change log
 * (index.c, FVS_CHANGE_RELABEL). */

/* Most faces one POST /faces stores from a photo (a crowd: pick=largest,
 * or crop it). */
#define UNASSIGNED_PER_PHOTO 64

/* Most face ids one assign names. */
#define ASSIGN_MAX 10000

/* Stores rows[0..n) without a subject in one transaction and answers 201
 * {"faces": [{"face_id", "box", "score", "quality"}], "count"} (quality:
 * qualities[i], taken; NULL: null). */
static void store_unassigned(fvs_req *r, fvs_resp *out, const fvs_face_row *rows, size_t n,
                             json_t **qualities) {
    int64_t subjects[UNASSIGNED_PER_PHOTO] = {0}, ids[UNASSIGNED_PER_PHOTO] = {0};
    char err[256];
    int rc = n <= UNASSIGNED_PER_PHOTO ? fvs_faces_insert_many(r->srv->store, r->coll.id, n,
                                                               subjects, rows, ids, err, sizeof err)
                                       : -1;
    json_t *faces = rc ? NULL : json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *q = qualities && qualities[i] ? qualities[i] : json_null();
        if (faces)
            json_array_append_new(faces,
                                  json_pack("{s:I, s:{s:f, s:f, s:f, s:f}, s:f, s:o}", "face_id",
                                            (json_int_t)ids[i], "box", "left", (double)rows[i].left,
                                            "top", (double)rows[i].top, "right",
                                            (double)rows[i].right, "bottom", (double)rows[i].bottom,
                                            "score", (double)rows[i].score, "quality", q));
        else
            json_decref(q);
    }
    if (rc) {
        db_error(out, n <= UNASSIGNED_PER_PHOTO ? err : "too many faces");
        return;
    }
    fvs_reply(out, 201,
              json_pack("{s:o, s:I}", "faces", faces, "count", (json_int_t)json_array_size(faces)));
}

/* POST /faces: a photo's faces (every one, or the largest with
 * pick=largest), or a bare embedding, stored without a subject. */
static void h_faces_add(fvs_req *r, fvs_resp *out) {
    if (r->json && json_object_get(r->json, "embedding")) {
        float emb[FV_EMBED_DIM];
        if (check_model_field(r, out) ||
            parse_embedding(json_object_get(r->json, "embedding"), "embedding", emb, out))
            return;
        fvs_face_row row = {r->coll.model, emb, 0, 0, 0, 0, 0, NULL, -1, NULL, 0};
        store_unassigned(r, out, &row, 1, NULL);
        return;
    }
    const fv_model *m = NULL;
    fv_detect_options opt;
    int largest = get_choice(r, "pick", "all", "largest", out);
    if (largest < 0 || need_engine(r, out) || coll_model(r, &m, out) ||
        get_detect_options(r, &opt, out))
        return;
    char mac[65] = "";
    double ms[3] = {0, 0, 0};
    fv_face *faces = NULL;
    size_t n = 0;
    float *emb = NULL;
    json_t *extras = NULL;
    if (photo_faces(r, m, &opt, mac, &faces, &n, &emb, &extras, ms, out)) return;
    size_t first = 0, count = n;
    if (largest) {
        for (size_t i = 1; i < n; i++)
            if ((faces[i].right - faces[i].left) * (faces[i].bottom - faces[i].top) >
                (faces[first].right - faces[first].left) * (faces[first].bottom - faces[first].top))
                first = i;
        count = 1;
    }
    if (count > UNASSIGNED_PER_PHOTO) {
        json_decref(extras);
        free(emb);
        free(faces);
        fvs_error(out, 422, "too_many_faces",
                  "image: %zu faces found; POST /faces stores at most %d faces per photo "
                  "(pick=largest stores one)",
                  count, UNASSIGNED_PER_PHOTO);
        return;
    }
    fvs_face_row rows[UNASSIGNED_PER_PHOTO];
    json_t *qualities[UNASSIGNED_PER_PHOTO];
    for (size_t k = 0; k < count; k++) {
        size_t i = first + k;
        json_t *q = json_object_get(json_array_get(extras, i), "quality");
        json_t *score = json_object_get(q, "score");
        fvs_face_row row = {r->coll.model,
                            emb + i * FV_EMBED_DIM,
                            faces[i].left,
                            faces[i].top,
                            faces[i].right,
                            faces[i].bottom,
                            faces[i].score,
                            mac[0] ? mac : NULL,
                            json_is_number(score) ? json_number_value(score) : -1,
                            NULL,
                            0};
        rows[k] = row;
        qualities[k] = q ? json_incref(q) : NULL;
    }
    store_unassigned(r, out, rows, count, qualities);
    json_decref(extras);
    free(emb);
    free(faces);
}

/* GET /faces: the collection's faces, or with unassigned=true those
 * without a subject. */
static void h_faces_list(fvs_req *r, fvs_resp *out) {
    int limit = 50, offset = 0;
    int unassigned = get_choice(r, "unassigned", "false", "true", out);
    if (unassigned < 0 || get_int(r, "limit", 1, 1000, &limit, out) ||
        get_int(r, "offset", 0, 1000000000, &offset, out))
        return;
    json_t *faces = NULL;
    int64_t total = 0;
    char err[256];
    if (fvs_face_list_all(r->srv->store, r->coll.id, unassigned, limit, offset, &faces, &total, err,
                          sizeof err)) {
        db_error(out, err);
        return;
    }
    fvs_reply(out, 200,
              json_pack("{s:o, s:I, s:i, s:i}", "faces", faces, "total", (json_int_t)total, "limit",
                        limit, "offset", offset));
}

/* DELETE /faces/{face_id}: any face of the collection, unassigned or
 * not. */
static void h_face_remove(fvs_req *r, fvs_resp *out) {
    int64_t fid = r->path_face_id;
    char err[256];
    int rc = fvs_face_delete(r->srv->store, r->coll.id, 0, fid, err, sizeof err);
    if (rc < 0)
        db_error(out, err);
    else if (rc > 0)
        fvs_error(out, 404, "not_found", "no face %" PRId64, fid);
    else
        fvs_reply(out, 200, json_pack("{s:I, s:b}", "id", (json_int_t)fid, "deleted", 1));
}

/* The JSON body's "face_ids": 1..ASSIGN_MAX positive integers into
 * *ids (the caller frees) and *n; -1 after a 400. */
static int get_face_ids(fvs_req *r, int64_t **ids, size_t *n, fvs_resp *out) {
    const json_t *a = r->json ? json_object_get(r->json, "face_ids") : NULL;
    *ids = NULL;
    *n = json_array_size(a);
    if (!json_is_array(a) || *n == 0 || *n > ASSIGN_MAX) {
        fvs_error(out, 400, "validation_error", "face_ids: expected a JSON array of 1..%d face ids",
                  ASSIGN_MAX);
        return -1;
    }
    *ids = malloc(*n * sizeof **ids);
    if (!*ids) {
        fvs_error(out, 503, "unavailable", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < *n; i++) {
        const json_t *v = json_array_get(a, i);
        if (!json_is_integer(v) || json_integer_value(v) <= 0) {
            fvs_error(out, 400, "validation_error", "face_ids[%zu]: expected a positive integer",
                      i);
            free(*ids);
            *ids = NULL;
            return -1;
        }
        (*ids)[i] = (int64_t)json_integer_value(v);
    }
    return 0;
}

/* POST /faces/assign: names faces into subject_id, or into the subject
 * called subject_name (made, with metadata, when there is none). */
static void h_faces_assign(fvs_req *r, fvs_resp *out) {
    if (!r->json) {
        fvs_error(out, 400, "validation_error", "expected a JSON body");
        return;
    }
    const json_t *sj = json_object_get(r->json, "subject_id");
    const json_t *nj = json_object_get(r->json, "subject_name");
    fvs_assign a = {0, NULL, NULL, 0, 0, 0};
    if (!sj == !nj) {
        fvs_error(out, 400, "validation_error",
                  "give subject_id (an existing subject) or subject_name (new or existing), one "
                  "of them");
        return;
    }
    if (sj && (!json_is_integer(sj) || json_integer_value(sj) <= 0)) {
        fvs_error(out, 400, "validation_error", "subject_id: expected a positive integer");
        return;
    }
    if (sj && json_object_get(r->json, "metadata")) {
        fvs_error(out, 400, "validation_error",
                  "metadata: only for a subject that subject_name creates");
        return;
    }
    if (sj) a.subject = (int64_t)json_integer_value(sj);
    if (nj && check_subject_fields(r, "subject_name", json_string_value(nj), nj, &a.metadata, out))
        return;
    a.name = json_string_value(nj);
    int64_t *ids = NULL;
    size_t n = 0;
    if (get_face_ids(r, &ids, &n, out)) return;
    char err[256];
    int rc = fvs_faces_assign(r->srv->store, r->coll.id, ids, n, &a, err, sizeof err);
    free(ids);
    if (rc < 0)
        db_error(out, err);
    else if (rc == 1)
        fvs_error(out, 404, "not_found", "no subject %" PRId64, a.subject);
    else if (rc == 2)
        fvs_error(out, 404, "not_found", "no face %" PRId64, a.missing);
    else
        fvs_reply(out, 200,
                  json_pack("{s:I, s:I, s:b}", "subject_id", (json_int_t)a.subject, "moved",
                            (json_int_t)a.moved, "created", a.created));
}

/* POST /subjects/{id}/merge: every face of from_subject_id moves into
 * {id}, and from_subject_id is deleted. */
static void h_subject_merge(fvs_req *r, fvs_resp *out) {
    int64_t into = r->path_id, from = 0;
    char buf[64];
    const char *f = fvs_req_text(r, "from_subject_id", buf, sizeof buf);
    if (!f || parse_id(f, strlen(f), &from)) {
        fvs_error(out, 400, "validation_error", "from_subject_id: expected a subject id");
        return;
    }
    if (from == into) {
        fvs_error(out, 400, "validation_error",
                  "from_subject_id: a subject cannot be merged into itself");
        return;
    }
    json_t *subj = NULL;
    if (subject_or_404(r, into, &subj, out)) return;
    json_decref(subj);
    if (subject_or_404(r, from, &subj, out)) return;
    json_decref(subj);
    int64_t moved = 0;
    char err[256];
    int rc = fvs_subject_merge(r->srv->store, r->coll.id, into, from, &moved, err, sizeof err);
    if (rc < 0)
        db_error(out, err);
    else if (rc > 0) /* deleted meanwhile */
        fvs_error(out, 404, "not_found", "no subject %" PRId64 " or %" PRId64, into, from);
    else
        fvs_reply(out, 200,
                  json_pack("{s:I, s:I, s:I}", "subject_id", (json_int_t)into, "from_subject_id",
                            (json_int_t)from, "moved", (json_int_t)moved));
}

static void h_subject_verify(fvs_req *r, fvs_resp *out) {
    int64_t sid = r->path_id;
    if (need_engine(r, out)) return;
    op_point op;
    if (get_operating_point(r, &op, out)) return;
    json_t *subj = NULL;
    if (subject_or_404(r, sid, &subj, out)) return;
    double t0 = now_ms(), dec = 0;
    fv_face_result fr;
    if (embed_probe(r, 0, &fr, &dec, NULL, out)) {
        json_decref(subj);
        return;
    }
    fvs_best b;
    memset(&b, 0, sizeof b);
    b.probe = fr.embedding;
    char err[256], why[256] = "";
    /* Only templates of the collection's model are compared. */
    int64_t total = 0, stale = 0;
    int rc = fvs_templates(r->srv->store, r->coll.id, sid, r->coll.model, fvs_best_row, &b, err,
                           sizeof err);
    if (!rc) snprintf(why, sizeof why, "%s", err);
    if (!rc && b.n == 0 && b.nbad > 0) {
        /* None of the subject's templates opens: nothing to decide on. */
        snprintf(err, sizeof err, "%s", why);
        rc = -1;
    }
    if (rc || (b.n == 0 && fvs_template_counts(r->srv->store, r->coll.id, sid, r->coll.model,
                                               &total, &stale, err, sizeof err))) {
        json_decref(subj);
        db_error(out, err);
        return;
    }
    if (b.n == 0) {
        json_decref(subj);
        if (stale > 0)
            fvs_error(out, 409, "model_mismatch",
                      "subject %" PRId64 " has %" PRId64 " template%s made by another model than "
                      "this collection's (%s): enrol the subject's faces again",
                      sid, stale, stale == 1 ? "" : "s", r->coll.model);
        else
            fvs_error(out, 422, "no_templates", "subject %" PRId64 " has no enrolled faces", sid);
        return;
    }
    json_t *s = json_pack("{s:O, s:O}", "id", json_object_get(subj, "id"), "name",
                          json_object_get(subj, "name"));
    json_decref(subj);
    /* The pair is the probe and the best-matching template (a template of
     * unknown quality counts as 1). */
    float q = fv_pair_quality(fr.quality.score, (float)b.best_quality);
    float t = op_threshold(r, &op, q);
    json_t *o = json_pack("{s:o, s:I, s:i, s:s, s:o, s:s, s:o}", "subject", s, "matched_face_id",
                          (json_int_t)b.best_face, "templates_compared", b.n, "method",
                          "best_match", "face", used_face_json(&fr), "model", r->coll.model,
                          "timings_ms", timings_json(&fr.timings, dec, now_ms() - t0));
    o = add_decision(o, &op, b.best, t, estimated_fmr_json(r, b.best, q));
    /* A correction of the subject near the probe (corrections.h): not
     * this person, whatever the distance to its templates. */
    fvs_correction_set *corr = NULL;
    fvs_correction_opts co = correction_opts(r);
    fvs_correction_hit hit;
    if (fvs_corrections_load(r->srv->store, &r->coll, &sid, 1, co.radius, &corr, &co.unreadable,
                             co.why, sizeof co.why, err, sizeof err)) {
        json_decref(o);
        db_error(out, err);
        return;
    }
    if (o && fvs_corrections_exclude(corr, sid, fr.embedding, b.best, &hit)) {
        json_object_set_new(o, "verified", json_false());
        json_object_set_new(o, "reason", json_string("correction"));
        json_object_set_new(o, "correction",
                            json_pack("{s:I, s:f}", "correction_id", (json_int_t)hit.id, "distance",
                                      (double)hit.distance));
    }
    fvs_corrections_free(corr);
    o = add_warning(o, b.nbad ? fvs_unreadable_warning(b.bad, b.nbad, why) : NULL);
    fvs_reply(out, 200, add_warning(o, fvs_corrections_warning(co.unreadable, co.why)));
}

/* ------------------------------------------------------------ corrections
 *
 * "This face is not this person" (corrections.h): POST stores the face's
 * template against the subject, from a photo (its largest face), an
 * embedding, or a stored face of the collection; identify and the
 * subject's verify then never match a probe near it to the subject. */

/* Row of fvs_template_get: the stored face's template and subject. */
typedef struct face_tmpl {
    int found, unreadable;
    int64_t subject;
    float emb[FV_EMBED_DIM];
} face_tmpl;

static int face_tmpl_row(void *ctx, int64_t face_id, int64_t subject_id, const char *name,
                         const float *embedding, double quality) {
    (void)face_id;
    (void)name;
    (void)quality;
    face_tmpl *t = ctx;
    t->found = 1;
    t->subject = subject_id;
    if (embedding)
        memcpy(t->emb, embedding, sizeof t->emb);
    else
        t->unreadable = 1;
    return 0;
}

/* The embedding of stored face fid of r's collection (its model's) into
 * emb; -1 after an error in out: 404 when there is none, 409 when it is
 * one of subject sid's own templates (delete it instead). */
static int correction_from_face(fvs_req *r, int64_t sid, int64_t fid, float *emb, fvs_resp *out) {
    face_tmpl t = {0, 0, 0, {0}};
    char err[256];
    if (fvs_template_get(r->srv->store, r->coll.id, fid, r->coll.model, face_tmpl_row, &t, err,
                         sizeof err) ||
        t.unreadable) {
        db_error(out, err);
        return -1;
    }
    if (!t.found) {
        fvs_error(out, 404, "not_found", "no face %" PRId64 " (of this collection's model)", fid);
        return -1;
    }
    if (t.subject == sid) {
        fvs_error(out, 409, "conflict",
                  "face %" PRId64 " is one of subject %" PRId64 "'s own templates: delete it "
                  "(DELETE /api/v1/subjects/%" PRId64 "/faces/%" PRId64 ") instead",
                  fid, sid, sid, fid);
        return -1;
    }
    memcpy(emb, t.emb, sizeof t.emb);
    sodium_memzero(&t, sizeof t);
    return 0;
}

static void h_correction_create(fvs_req *r, fvs_resp *out) {
    int64_t sid = r->path_id;
    json_t *subj = NULL;
    if (subject_or_404(r, sid, &subj, out)) return;
    json_decref(subj);
    const json_t *ej = r->json ? json_object_get(r->json, "embedding") : NULL;
    const json_t *fj = r->json ? json_object_get(r->json, "face_id") : NULL;
    float emb[FV_EMBED_DIM];
    fvs_correction_row row = {r->coll.model, emb, "embedding", 0, -1};
    json_t *quality = NULL;
    if (r->json && (!ej) == (!fj)) {
        fvs_error(out, 400, "validation_error",
                  "expected 'embedding' (%d numbers) or 'face_id' (a stored face), or a photo "
                  "in the multipart field 'image'",
                  FV_EMBED_DIM);
        return;
    }
    if (ej) {
        if (check_model_field(r, out) || parse_embedding(ej, "embedding", emb, out)) return;
    } else if (fj) {
        json_int_t fid = json_is_integer(fj) ? json_integer_value(fj) : 0;
        if (fid <= 0) {
            fvs_error(out, 400, "validation_error", "face_id: expected a positive integer");
            return;
        }
        if (correction_from_face(r, sid, (int64_t)fid, emb, out)) return;
        row.source = "face";
        row.face_id = (int64_t)fid;
    } else {
        /* A photo: its largest face, as an identify result shows it. */
        fv_face_result fr;
        double dec = 0;
        if (need_engine(r, out) || embed_probe(r, 0, &fr, &dec, NULL, out)) return;
        memcpy(emb, fr.embedding, sizeof emb);
        row.source = "image";
        row.quality = fr.quality.score;
        quality = quality_json(&fr.quality);
    }
    int64_t id = 0;
    char err[256];
    int rc = fvs_correction_insert(r->srv->store, r->coll.id, sid, &row, &id, err, sizeof err);
    sodium_memzero(emb, sizeof emb);
    if (rc < 0)
        db_error(out, err);
    else if (rc > 0)
        fvs_error(out, 404, "not_found", "no subject %" PRId64, sid);
    if (rc) {
        json_decref(quality);
        return;
    }
    json_t *o = json_pack(
        "{s:I, s:I, s:s, s:s, s:f, s:f}", "correction_id", (json_int_t)id, "subject_id",
        (json_int_t)sid, "source", row.source, "model", r->coll.model, "radius",
        (double)fvs_correction_radius(r->coll.model, coll_threshold(r)), "fmr", FVS_CORRECTION_FMR);
    if (o && row.face_id) json_object_set_new(o, "face_id", json_integer((json_int_t)row.face_id));
    if (o && quality)
        json_object_set_new(o, "quality", quality);
    else
        json_decref(quality);
    fvs_reply(out, 201, o);
}

static void h_correction_list(fvs_req *r, fvs_resp *out) {
    int64_t sid = r->path_id;
    json_t *arr = NULL;
    char err[256];
    int rc = fvs_correction_list(r->srv->store, r->coll.id, sid, &arr, err, sizeof err);
    if (rc < 0)
        db_error(out, err);
    else if (rc > 0)
        fvs_error(out, 404, "not_found", "no subject %" PRId64, sid);
    else
        fvs_reply(out, 200,
                  json_pack("{s:I, s:I, s:o}", "subject_id", (json_int_t)sid, "count",
                            (json_int_t)json_array_size(arr), "corrections", arr));
}

static void h_correction_delete(fvs_req *r, fvs_resp *out) {
    int64_t sid = r->path_id, cid = r->path_correction_id;
    char err[256];
    int rc = fvs_correction_delete(r->srv->store, r->coll.id, sid, cid, err, sizeof err);
    if (rc < 0)
        db_error(out, err);
    else if (rc > 0)
        fvs_error(out, 404, "not_found", "no correction %" PRId64 " for subject %" PRId64, cid,
                  sid);
    else
        fvs_reply(out, 200,
                  json_pack("{s:I, s:I, s:b}", "correction_id", (json_int_t)cid, "subject_id",
                            (json_int_t)sid, "deleted", 1));
}

/* The calling key's collection: its model and whether this server has it
 * loaded, the threshold in force, and how many of its templates the model
 * cannot use (made by another model: they need re-enrolment).  The
 * threshold is the collection's own, else its model's calibrated one
 * (the engine's for the ResNet); null when that model is not loaded, rather
 * than the engine's, which means nothing in another model's space. */
static json_t *collection_json(fvs_req *r, int64_t total, int64_t stale) {
    const char *ib = r->coll.index_backend;
    const char *id = NULL;
    const fv_model *m = NULL;
    int found = fvs_models_find(r->srv->models, r->coll.model, &id, &m) == 0;
    int available = found && r->srv->engine != NULL;
    json_t *threshold = json_null();
    if (r->coll.threshold > 0)
        threshold = json_real(r->coll.threshold);
    else if (found && m && fv_model_threshold(m) > 0)
        threshold = json_real(fv_model_threshold(m));
    else if (available)
        threshold = json_real(r->srv->default_threshold);
    /* The default operating point: for an fmr, its threshold for a pair
     * of quality 1 (poorer faces get stricter ones). */
    op_point op;
    coll_operating_point(r, &op);
    json_t *opj = json_null();
    if (op.fmr > 0 && available) {
        json_decref(threshold);
        threshold = json_real((double)op_threshold(r, &op, 1.0f));
        opj = op_json(&op, op_threshold(r, &op, 1.0f));
    } else if (!json_is_null(threshold)) {
        opj = op_json(&op, (float)json_real_value(threshold));
    }
    const fvs_collection *c = &r->coll;
    json_t *o = json_pack("{s:I, s:s, s:s, s:o, s:b, s:o, s:I, s:I, s:o, s:s}", "id",
                          (json_int_t)c->id, "name", c->name, "model", c->model, "threshold",
                          threshold, "model_available", available, "threshold_override",
                          c->threshold > 0 ? json_real(c->threshold) : json_null(), "templates",
                          (json_int_t)total, "templates_needing_reenrolment", (json_int_t)stale,
                          "index_backend", ib[0] ? json_string(ib) : json_null(),
                          "index_backend_in_force", fvs_index_backend_in_force(r->srv->index, ib));
    if (!o) {
        json_decref(opj);
        return NULL;
    }
    json_object_set_new(o, "fmr", c->fmr > 0 ? json_real(c->fmr) : json_null());
    json_object_set_new(o, "fpir", c->fpir > 0 ? json_real(c->fpir) : json_null());
    json_object_set_new(o, "min_quality",
                        c->min_quality >= 0 ? json_real(c->min_quality) : json_null());
    json_object_set_new(o, "operating_point", opj);
    return o;
}

static void h_collection_get(fvs_req *r, fvs_resp *out) {
    int64_t total = 0, stale = 0;
    char err[256];
    if (fvs_template_counts(r->srv->store, r->coll.id, 0, r->coll.model, &total, &stale, err,
                            sizeof err)) {
        db_error(out, err);
        return;
    }
    fvs_reply(out, 200, collection_json(r, total, stale));
}

/* Validates PATCH /api/v1/collection's "index_backend": a backend name
 * (src/search/search.h) this build can create, or null (the server's).
 * *name: "" for null. */
static int patch_backend(const json_t *bj, char *name, size_t cap, fvs_resp *out) {
    name[0] = 0;
    if (json_is_null(bj)) return 0;
    fvsearch_kind kind;
    char err[256] = "";
    fvsearch *probe = NULL;
    if (!json_is_string(bj) || fvsearch_kind_parse(json_string_value(bj), &kind) != 0 ||
        !(probe = fvsearch_create(kind, err, sizeof err))) {
        fvs_error(out, 400, "validation_error",
                  "index_backend: expected exact, exact-int8, faiss-flat, faiss-hnsw or "
                  "faiss-ivfpq (null: the server's)%s%s",
                  err[0] ? ": " : "", err);
        return -1;
    }
    fvsearch_destroy(probe);
    snprintf(name, cap, "%s", fvsearch_kind_name(kind));
    return 0;
}

/* One policy field of PATCH /api/v1/collection, j (NULL: absent, *v
 * unchanged): null sets *v to unset (the store's convention for NULL),
 * a number in [lo, hi] sets it.  Else 400 naming the field. */
static int patch_number(const json_t *j, const char *name, double lo, double hi, double unset,
                        double *v, fvs_resp *out) {
    if (!j) return 0;
    if (json_is_null(j)) {
        *v = unset;
        return 0;
    }
    double d = json_is_number(j) ? json_number_value(j) : -1;
    if (!json_is_number(j) || !(d >= lo && d <= hi)) {
        fvs_error(out, 400, "validation_error", "%s: expected a number in [%g, %g], or null", name,
                  lo, hi);
        return -1;
    }
    *v = d;
    return 0;
}

static const char *const PATCH_KEYS[] = {"model", "index_backend", "fmr", "fpir", "min_quality"};
#define N_PATCH_KEYS (sizeof PATCH_KEYS / sizeof PATCH_KEYS[0])

/* 400 unless every key of the PATCH body is a collection setting and at
 * least one is there. */
static int patch_keys(const json_t *body, fvs_resp *out) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v) {
        size_t i = 0;
        while (i < N_PATCH_KEYS && strcmp(key, PATCH_KEYS[i]) != 0) i++;
        if (i == N_PATCH_KEYS) {
            fvs_error(out, 400, "validation_error",
                      "%.64s: not a collection setting (model, index_backend, fmr, fpir, "
                      "min_quality)",
                      key);
            return -1;
        }
    }
    if (json_object_size(body) == 0) {
        fvs_error(out, 400, "validation_error",
                  "expected 'model', 'index_backend', 'fmr', 'fpir' and/or 'min_quality'");
        return -1;
    }
    return 0;
}

/* The decision policy of a PATCH body, validated against the collection's
 * model after the switch (model_id): *pol starts as the collection's. */
static int patch_policy(fvs_req *r, const char *model_id, fvs_collection *pol, fvs_resp *out) {
    const json_t *fj = json_object_get(r->json, "fmr");
    if (patch_number(fj, "fmr", FV_FMR_MIN, FV_FMR_MAX, 0, &pol->fmr, out) ||
        patch_number(json_object_get(r->json, "fpir"), "fpir", FVS_FPIR_MIN, FVS_FPIR_MAX, 0,
                     &pol->fpir, out) ||
        patch_number(json_object_get(r->json, "min_quality"), "min_quality", 0, 1, -1,
                     &pol->min_quality, out))
        return -1;
    float t = 0;
    if (fj && pol->fmr > 0 && fv_fmr_threshold(model_id, pol->fmr, 1.0f, &t) != FV_OK) {
        fvs_error(out, 400, "validation_error", "fmr: no false-match-rate calibration for model %s",
                  model_id);
        return -1;
    }
    return 0;
}

/* Writes the PATCH's changes: model, backend, policy (an fmr set clears
 * the collection's threshold, which would otherwise outrank it). */
static int patch_apply(fvs_req *r, const json_t *mj, const char *id, const json_t *bj,
                       const char *backend, const fvs_collection *pol, int64_t *stale, char *err,
                       size_t errlen) {
    fvs_store *st = r->srv->store;
    int rc = 0;
    if (mj) rc = fvs_collection_set_model(st, r->coll.id, id, stale, err, errlen);
    if (!rc && bj) rc = fvs_collection_set_index_backend(st, r->coll.id, backend, err, errlen);
    int policy = json_object_get(r->json, "fmr") || json_object_get(r->json, "fpir") ||
                 json_object_get(r->json, "min_quality");
    if (!rc && policy)
        rc = fvs_collection_set_policy(st, r->coll.id, pol->fmr, pol->fpir, pol->min_quality, err,
                                       errlen);
    int clear = pol->fmr > 0 && json_object_get(r->json, "fmr") && r->coll.threshold > 0;
    if (!rc && clear) rc = fvs_collection_set_threshold(st, r->coll.id, 0, err, errlen);
    if (rc) return rc;
    if (mj) snprintf(r->coll.model, sizeof r->coll.model, "%s", id);
    if (bj) snprintf(r->coll.index_backend, sizeof r->coll.index_backend, "%s", backend);
    r->coll.fmr = pol->fmr;
    r->coll.fpir = pol->fpir;
    r->coll.min_quality = pol->min_quality;
    if (clear) r->coll.threshold = 0;
    return 0;
}

/* PATCH /api/v1/collection {"model": NAME, "index_backend": B, "fmr": F,
 * "fpir": P, "min_quality": Q}: any of them (null: back to the server's
 * default).  A model switch changes the model new templates are made with
 * and searches use; templates are kept as they are, and the answer counts
 * those of other models, which are no longer searched or compared until
 * enrolled again.  Everything is validated before anything changes. */
static void h_collection_patch(fvs_req *r, fvs_resp *out) {
    if (!r->json || !json_is_object(r->json)) {
        fvs_error(out, 400, "validation_error", "expected a JSON object");
        return;
    }
    if (patch_keys(r->json, out)) return;
    const json_t *mj = json_object_get(r->json, "model");
    const json_t *bj = json_object_get(r->json, "index_backend");
    if (mj && (!json_is_string(mj) || json_string_length(mj) == 0 ||
               json_string_length(mj) > FVS_NAME_MAX)) {
        fvs_error(out, 400, "validation_error",
                  "model: expected a model name or id (GET /api/v1/models lists them)");
        return;
    }
    const char *id = r->coll.model;
    const fv_model *m = NULL;
    if (mj && fvs_models_find(r->srv->models, json_string_value(mj), &id, &m)) {
        fvs_error(out, 400, "unknown_model",
                  "model: no model named '%.64s' on this server (GET /api/v1/models lists them)",
                  json_string_value(mj));
        return;
    }
    char backend[sizeof r->coll.index_backend] = "";
    if (bj && patch_backend(bj, backend, sizeof backend, out)) return;
    fvs_collection pol = r->coll;
    if (patch_policy(r, id, &pol, out)) return;
    char previous[FVS_MODEL_ID_MAX + 1];
    snprintf(previous, sizeof previous, "%s", r->coll.model);
    int64_t stale = 0, total = 0;
    char err[256];
    int rc = patch_apply(r, mj, id, bj, backend, &pol, &stale, err, sizeof err);
    if (!rc)
        rc = fvs_template_counts(r->srv->store, r->coll.id, 0, r->coll.model, &total, &stale, err,
                                 sizeof err);
    if (rc < 0) {
        db_error(out, err);
        return;
    }
    if (rc > 0) {
        fvs_error(out, 404, "not_found", "the collection is gone");
        return;
    }
    json_t *o = collection_json(r, total, stale);
    json_object_set_new(o, "previous_model", json_string(previous));
    fvs_reply(out, 200, o);
}

static void h_models(fvs_req *r, fvs_resp *out) {
    json_t *arr = fvs_models_json(r->srv->models, r->srv->default_threshold);
    fvs_reply(out, 200,
              json_pack("{s:I, s:o, s:s}", "count", (json_int_t)json_array_size(arr), "results",
                        arr, "collection_model", r->coll.model));
}

/* GET /api/v1/audit: the calling key's collection's audit log, newest
 * first; ?before=ID pages back. */
static void h_audit(fvs_req *r, fvs_resp *out) {
    int limit = 100, before = 0;
    if (get_int(r, "limit", 1, 1000, &limit, out) ||
        get_int(r, "before", 0, 2000000000, &before, out))
        return;
    json_t *res = NULL;
    char err[256];
    if (fvs_audit_list(r->srv->store, r->coll.id, NULL, limit, before, &res, err, sizeof err)) {
        db_error(out, err);
        return;
    }
    fvs_reply(out, 200,
              json_pack("{s:I, s:i, s:o}", "count", (json_int_t)json_array_size(res), "limit",
                        limit, "results", res));
}

/* ------------------------------------------------------------ pages */

/* GET /api/openapi.json and GET /docs (/api/docs): the API's description
 * and the page rendering it, from the assets folder. */
static void h_openapi(fvs_req *r, fvs_resp *out) {
    fvs_asset_serve(r, out, "openapi.json", "application/json");
}

static void h_docs(fvs_req *r, fvs_resp *out) {
    fvs_asset_serve(r, out, "docs.html", "text/html; charset=utf-8");
}

/* GET /metrics: the Prometheus exposition (metrics.h), keyless.  404 when
 * the operator turned it off (--no-metrics), and to anyone but a loopback
 * address with --metrics-local-only: the same answer as a path that does
 * not exist, so it says nothing about the setting. */
static void h_metrics(fvs_req *r, fvs_resp *out) {
    const fvs_config *cfg = &r->srv->cfg;
    int allowed = cfg->metrics == FVS_METRICS_ON;
    if (cfg->metrics == FVS_METRICS_LOCAL) {
        char addr[64];
        fvs_req_remote(r, addr, sizeof addr);
        allowed = strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
                  strncmp(addr, "::ffff:127.", 11) == 0;
    }
    if (!allowed) {
        fvs_error(out, 404, "not_found", "no route %s", r->url);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    if (fvs_metrics_render(r->srv, &text, &len)) {
        fvs_error(out, 503, "unavailable", "out of memory");
        return;
    }
    fvs_reply_bytes(out, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

/* ------------------------------------------------------------ routing */

/* Who may call a route: anyone, or a collection's key holder (X-API-Key,
 * or in demo mode the demo page's X-Demo-Token, demo.h). */
typedef enum { AUTH_NONE, AUTH_KEY } route_auth;

/* One route.  path is spelled as in openapi.json: a "{...}" segment is a
 * parameter ({id}: a subject id, {face_id}: a face id, {name}: any one
 * segment), everything else is literal.  audit: the audit log's action
 * (audit.h), NULL for routes that are not logged. */
typedef struct route {
    const char *method;
    const char *path;
    void (*handler)(fvs_req *r, fvs_resp *out);
    route_auth auth;
    const char *audit;
} route;

/* The route table: the one list of what faceverifyd answers.  Routing, the
 * 405s and their Allow header, authentication and the audit log come from
 * it, `faceverifyd routes` prints it, and tests/py/test_routes.py holds it
 * against openapi.json both ways. */
static const route ROUTES[] = {
    {"GET", "/", fvs_demo_page, AUTH_NONE, NULL},
    {"HEAD", "/", fvs_demo_page, AUTH_NONE, NULL},
    {"GET", "/index.html", fvs_demo_page, AUTH_NONE, NULL},
    {"HEAD", "/index.html", fvs_demo_page, AUTH_NONE, NULL},
    {"GET", "/static/{name}", fvs_asset_static, AUTH_NONE, NULL},
    {"HEAD", "/static/{name}", fvs_asset_static, AUTH_NONE, NULL},
    {"GET", "/docs", h_docs, AUTH_NONE, NULL},
    {"GET", "/api/docs", h_docs, AUTH_NONE, NULL},
    {"GET", "/api/openapi.json", h_openapi, AUTH_NONE, NULL},
    {"GET", "/api/v1/health", h_health, AUTH_NONE, NULL},
    {"GET", "/metrics", h_metrics, AUTH_NONE, NULL},
    {"POST", "/api/v1/detect", h_detect, AUTH_KEY, "detect"},
    {"POST", "/api/v1/verify", h_verify, AUTH_KEY, "verify"},
    {"POST", "/api/v1/verify/embeddings", h_verify_embeddings, AUTH_KEY, "verify.embeddings"},
    {"POST", "/api/v1/identify", h_identify, AUTH_KEY, "identify"},
    {"POST", "/api/v1/identify/embeddings", h_identify_embeddings, AUTH_KEY, "identify.embeddings"},
    {"POST", "/api/v1/subjects", h_subjects_create, AUTH_KEY, "subject.create"},
    {"GET", "/api/v1/subjects", h_subjects_list, AUTH_KEY, "subject.list"},
    {"GET", "/api/v1/subjects/{id}", h_subject_get, AUTH_KEY, "subject.read"},
    {"DELETE", "/api/v1/subjects/{id}", h_subject_delete, AUTH_KEY, "subject.delete"},
    {"POST", "/api/v1/subjects/{id}/faces", h_face_enroll, AUTH_KEY, "face.enroll"},
    {"GET", "/api/v1/subjects/{id}/faces", h_face_list, AUTH_KEY, "face.list"},
    {"POST", "/api/v1/subjects/{id}/faces/batch", h_face_batch, AUTH_KEY, "face.enroll_batch"},
    {"POST", "/api/v1/faces/cluster", h_faces_cluster, AUTH_KEY, "face.cluster"},
    {"DELETE", "/api/v1/subjects/{id}/faces/{face_id}", h_face_delete, AUTH_KEY, "face.delete"},
    {"POST", "/api/v1/subjects/{id}/verify", h_subject_verify, AUTH_KEY, "subject.verify"},
    {"POST", "/api/v1/subjects/{id}/merge", h_subject_merge, AUTH_KEY, "subject.merge"},
    {"POST", "/api/v1/faces", h_faces_add, AUTH_KEY, "face.add"},
    {"GET", "/api/v1/faces", h_faces_list, AUTH_KEY, "faces.list"},
    {"DELETE", "/api/v1/faces/{face_id}", h_face_remove, AUTH_KEY, "face.remove"},
    {"POST", "/api/v1/faces/assign", h_faces_assign, AUTH_KEY, "face.assign"},
    {"POST", "/api/v1/subjects/{id}/not", h_correction_create, AUTH_KEY, "correction.create"},
    {"GET", "/api/v1/subjects/{id}/not", h_correction_list, AUTH_KEY, "correction.list"},
    {"DELETE", "/api/v1/subjects/{id}/not/{correction_id}", h_correction_delete, AUTH_KEY,
     "correction.delete"},
    {"GET", "/api/v1/audit", h_audit, AUTH_KEY, "audit.read"},
    {"GET", "/api/v1/collection", h_collection_get, AUTH_KEY, "collection.read"},
    {"PATCH", "/api/v1/collection", h_collection_patch, AUTH_KEY, "collection.update"},
    {"GET", "/api/v1/models", h_models, AUTH_KEY, "models.read"},
};
#define NROUTES (sizeof ROUTES / sizeof ROUTES[0])

/* Whether url matches pattern segment by segment (a parameter matches any
 * one segment, even an empty one).  On a match, sets r's path parameters
 * and returns 1; a malformed id is then a 404 in out and returns -1. */
static int match_path(const char *pattern, const char *url, fvs_req *r, fvs_resp *out) {
    /* The parameters' segments, by name. */
    static const char *const params[] = {"{id}", "{face_id}", "{name}", "{correction_id}"};
    const char *seg[4] = {NULL, NULL, NULL, NULL};
    size_t len[4] = {0, 0, 0, 0};
    const char *p = pattern, *u = url;
    while (*p && *u) {
        if (*p++ != '/' || *u++ != '/') return 0;
        size_t pn = strcspn(p, "/"), un = strcspn(u, "/");
        if (p[0] == '{') {
            for (int k = 0; k < 4; k++) {
                if (strlen(params[k]) == pn && strncmp(p, params[k], pn) == 0) {
                    seg[k] = u;
                    len[k] = un;
                }
            }
        } else if (pn != un || strncmp(p, u, pn) != 0) {
            return 0;
        }
        p += pn;
        u += un;
    }
    if (*p || *u) return 0;
    r->path_id = r->path_face_id = r->path_correction_id = 0;
    r->path_name = seg[2];
    r->path_name_len = len[2];
    /* Ids are checked before the method and the key: a malformed one is a
     * 404 for everyone, as an unknown one is. */
    if (seg[0] && parse_id(seg[0], len[0], &r->path_id)) {
        fvs_error(out, 404, "not_found", "no subject %.*s", (int)(len[0] > 40 ? 40 : len[0]),
                  seg[0]);
        return -1;
    }
    if (seg[1] && parse_id(seg[1], len[1], &r->path_face_id)) {
        fvs_error(out, 404, "not_found", "no face %.*s", (int)(len[1] > 40 ? 40 : len[1]), seg[1]);
        return -1;
    }
    if (seg[3] && parse_id(seg[3], len[3], &r->path_correction_id)) {
        fvs_error(out, 404, "not_found", "no correction %.*s", (int)(len[3] > 40 ? 40 : len[3]),
                  seg[3]);
        return -1;
    }
    return 1;
}

/* r's route, or NULL after a 404 (no such path, or a malformed id) or a
 * 405 (the path exists, the method does not: Allow lists its methods).
 * A fixed segment wins over a parameter wherever the two routes stand in
 * the table (POST /faces/assign is not DELETE /faces/{face_id} with a
 * malformed id): a malformed id is the answer only when no later route
 * matches. */
static const route *find_route(fvs_req *r, fvs_resp *out) {
    size_t i = 0, malformed = NROUTES;
    int m = 0;
    for (; i < NROUTES; i++) {
        m = match_path(ROUTES[i].path, r->url, r, out);
        if (m > 0) break;
        if (m < 0 && malformed == NROUTES) malformed = i;
    }
    if (i < NROUTES && malformed < NROUTES) {
        fvs_resp_free(out);
        out->status = 0;
    }
    if (i == NROUTES && malformed < NROUTES) {
        r->route_path = ROUTES[malformed].path;
        return NULL;
    }
    if (i < NROUTES) r->route_path = ROUTES[i].path;
    if (i == NROUTES) {
        fvs_error(out, 404, "not_found", "no route %s", r->url);
        return NULL;
    }
    const route *found = NULL;
    char allow[64] = "";
    for (size_t j = 0; j < NROUTES; j++) {
        if (strcmp(ROUTES[j].path, ROUTES[i].path) != 0) continue;
        if (strcmp(ROUTES[j].method, r->method) == 0) found = &ROUTES[j];
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof allow - used, "%s%s", used ? ", " : "", ROUTES[j].method);
    }
    if (found) return found;
    fvs_error(out, 405, "method_not_allowed", "%s is not allowed on %s", r->method, r->url);
    fvs_resp_header(out, "Allow", allow);
    return NULL;
}

int fvs_route_check(fvs_req *r, fvs_resp *out) {
    const route *rt = find_route(r, out);
    if (!rt) return -1;
    if (rt->auth == AUTH_KEY &&
        (fvs_demo_request(r) ? fvs_demo_authenticate(r, out) : authenticate(r, out)))
        return -1;
    r->route = rt;
    return 0;
}

void fvs_route_run(fvs_req *r, fvs_resp *out) {
    const route *rt = r->route;
    if (!rt) {
        fvs_error(out, 500, "internal_error", "no route checked");
        return;
    }
    rt->handler(r, out);
    if (rt->audit) fvs_audit_request(r, rt->audit, r->path_id, r->path_face_id, out);
}

json_t *fvs_routes_json(void) {
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < NROUTES; i++) {
        const route *rt = &ROUTES[i];
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:s?}", "method", rt->method, "path", rt->path, "auth",
                      rt->auth == AUTH_KEY ? "api_key" : "none", "audit", rt->audit);
        if (!o || json_array_append_new(arr, o)) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}
