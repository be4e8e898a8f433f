/*
 * test_engine.c: the public pipeline on real photos through the library
 * API: verdicts, the "face used", strict mode, no-face errors, concurrent
 * calls on one shared engine, out-of-memory at every allocation of a
 * whole fv_verify, and one code path for every embedding model: fv_verify
 * with a trained model (made here, as `faceverify train` would) detects,
 * aligns and times exactly as without one, and fv_embed_chips applies the
 * flip policy as fv_embed_face does.  Needs the models (FACEVERIFY_MODELS) and the sample
 * photos (FACEVERIFY_DATA); skips without them unless
 * FACEVERIFY_REQUIRE_DATA=1.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/fvi.h"
#include "image/image.h"
#include "image/resize.h"
#include "train/train.h"

static char data_dir[2048];
static fv_engine *engine;

static int require_data(void) {
    const char *r = getenv("FACEVERIFY_REQUIRE_DATA");
    return r && !strcmp(r, "1");
}

static int setup(void **state) {
    (void)state;
    const char *d = getenv("FACEVERIFY_DATA");
    const char *src = getenv("FACEVERIFY_SOURCE");
    if (d)
        snprintf(data_dir, sizeof data_dir, "%s", d);
    else
        snprintf(data_dir, sizeof data_dir, "%s/../shared/data", src ? src : "..");
    struct stat sb;
    char probe[2300];
    snprintf(probe, sizeof probe, "%s/samples/labels.csv", data_dir);
    if (stat(probe, &sb) != 0) return 0; /* tests skip or fail individually */
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.threads = 2;
    char err[256] = "";
    if (fv_engine_create(&cfg, &engine, err, sizeof err) != FV_OK) {
        fprintf(stderr, "engine: %s\n", err);
        engine = NULL;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    fv_engine_destroy(engine);
    return 0;
}

/* Skips (or fails under FACEVERIFY_REQUIRE_DATA=1) without data/models. */
#define NEED_ENGINE()                                                                              \
    do {                                                                                           \
        if (!engine) {                                                                             \
            if (require_data()) fail_msg("models or data missing under %s", data_dir);             \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static fv_image *load(const char *rel) {
    char path[2400];
    snprintf(path, sizeof path, "%s/%s", data_dir, rel);
    fv_image *img = NULL;
    char err[256] = "";
    fv_status st = fv_image_load(path, NULL, &img, err, sizeof err);
    if (st != FV_OK) fail_msg("%s: %s", path, err);
    return img;
}

/* The default detector (auto) in force: mtcnn when models/mtcnn.bin is
 * installed (CI requires it), else mmod. */
static const char *auto_detector(void) {
    char path[2400];
    snprintf(path, sizeof path, "%s/mtcnn.bin", fv_models_dir(NULL));
    int have = access(path, R_OK) == 0;
    if (!have && require_data()) fail_msg("%s missing", path);
    return have ? "mtcnn" : "mmod";
}

/* auto resolves to the detector in force, and max_side to its own; a
 * failed allocation while loading MTCNN's weights is reported, not taken
 * for "not installed" (which would quietly run MMOD instead). */
static void test_auto_detector_resolves(void **state) {
    (void)state;
    NEED_ENGINE();
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.threads = 1;
    fv_engine *e = NULL;
    assert_int_equal(fv_engine_create(&cfg, &e, NULL, 0), FV_OK);
    fv_detect_options opt;
    fv_detect_options_init(&opt);
    assert_int_equal(opt.detector, FV_DETECTOR_AUTO);
    assert_string_equal(fv_detector_name(opt.detector), "auto");
    int mtcnn = strcmp(auto_detector(), "mtcnn") == 0;
    if (mtcnn) {
        fvi_alloc_fail_after(0);
        fv_status st = fv_detect_options_resolve(e, &opt, NULL, 0);
        fvi_alloc_fail_after(-1);
        assert_int_equal(st, FV_E_NO_MEMORY);
        assert_int_equal(opt.detector, FV_DETECTOR_AUTO);
    }
    assert_int_equal(fv_detect_options_resolve(e, &opt, NULL, 0), FV_OK);
    assert_string_equal(fv_detector_name(opt.detector), auto_detector());
    assert_int_equal(opt.max_side, mtcnn ? 0 : 1600);
    /* an explicit detector stays; its max_side default is its own */
    fv_detect_options_init(&opt);
    opt.detector = FV_DETECTOR_MMOD;
    assert_int_equal(fv_detect_options_resolve(e, &opt, NULL, 0), FV_OK);
    assert_int_equal(opt.detector, FV_DETECTOR_MMOD);
    assert_int_equal(opt.max_side, 1600);
    /* an upsampling level is MMOD's exact mode (the parity tests') */
    fv_detect_options_init(&opt);
    opt.upsample = 0;
    assert_int_equal(fv_detect_options_resolve(e, &opt, NULL, 0), FV_OK);
    assert_int_equal(opt.detector, FV_DETECTOR_MMOD);
    assert_int_equal(opt.max_side, 1600);
    opt.max_side = 800; /* an explicit max_side stays */
    assert_int_equal(fv_detect_options_resolve(e, &opt, NULL, 0), FV_OK);
    assert_int_equal(opt.max_side, 800);
    fv_engine_destroy(e);
}

/* Without mtcnn.bin in the model folder, auto runs MMOD. */
static void test_auto_detector_without_mtcnn(void **state) {
    (void)state;
    NEED_ENGINE();
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.threads = 1;
    cfg.mtcnn_model = "/nonexistent/mtcnn.bin";
    fv_engine *e = NULL;
    assert_int_equal(fv_engine_create(&cfg, &e, NULL, 0), FV_OK);
    fv_image *b = load("samples/openface/clapton-2.jpg");
    fv_verify_result r;
    char err[256];
    assert_int_equal(fv_verify(e, b, b, NULL, &r, err, sizeof err), FV_OK);
    assert_string_equal(r.detector, "mmod");
    /* asked for by name, it is an error */
    fv_verify_options vo;
    fv_verify_options_init(&vo);
    vo.detect.detector = FV_DETECTOR_MTCNN;
    assert_int_equal(fv_verify(e, b, b, &vo, &r, err, sizeof err), FV_E_MODEL_MISSING);
    fv_image_destroy(b);
    fv_engine_destroy(e);
}

static void test_verify_same_and_different(void **state) {
    (void)state;
    NEED_ENGINE();
    fv_image *a = load("samples/openface/lennon-2.jpg");
    fv_image *b = load("samples/openface/clapton-2.jpg");
    fv_image *c = load("samples/openface/clapton-1.jpg");
    fv_verify_result r;
    char err[256];
    assert_int_equal(fv_verify(engine, b, c, NULL, &r, err, sizeof err), FV_OK);
    assert_true(r.verified);
    assert_true(r.distance < r.threshold);
    assert_float_equal(r.threshold, fv_engine_threshold(engine), 0);
    assert_true(r.similarity > 0.5f);
    assert_string_equal(r.model, FV_MODEL_ID);
    assert_string_equal(r.detector, auto_detector());
    assert_int_equal(r.a.faces, 1);
    assert_true(r.a.face.score > 0.5f);
    assert_int_equal(fv_verify(engine, a, b, NULL, &r, err, sizeof err), FV_OK);
    assert_false(r.verified);
    assert_true(r.similarity < 0.5f);
    /* an explicit threshold above the distance flips the verdict */
    fv_verify_options opt;
    fv_verify_options_init(&opt);
    opt.threshold = r.distance + 0.01f;
    assert_int_equal(fv_verify(engine, a, b, &opt, &r, err, sizeof err), FV_OK);
    assert_true(r.verified);
    fv_image_destroy(a);
    fv_image_destroy(b);
    fv_image_destroy(c);
}

static void test_no_face_and_strict(void **state) {
    (void)state;
    NEED_ENGINE();
    fv_image *cup = load("samples/skimage/coffee.png");
    fv_image *group = load("samples/openface/longoria-cooper.jpg");
    fv_verify_result r;
    char err[256] = "";
    assert_int_equal(fv_verify(engine, group, cup, NULL, &r, err, sizeof err), FV_E_NO_FACE);
    assert_non_null(strstr(err, "image b"));
    fv_face_result fr;
    assert_int_equal(fv_embed_face(engine, group, NULL, 0, &fr, err, sizeof err), FV_OK);
    assert_int_equal(fr.faces, 2);
    fv_face used = fr.face;
    assert_int_equal(fv_embed_face(engine, group, NULL, 1, &fr, err, sizeof err),
                     FV_E_MULTIPLE_FACES);
    /* the face used is the largest of those fv_detect reports */
    fv_face faces[8];
    size_t n = 0;
    assert_int_equal(fv_detect(engine, group, NULL, faces, 8, &n, err, sizeof err), FV_OK);
    assert_int_equal(n, 2);
    float a0 = (faces[0].right - faces[0].left) * (faces[0].bottom - faces[0].top);
    float a1 = (faces[1].right - faces[1].left) * (faces[1].bottom - faces[1].top);
    assert_true(a0 >= a1);
    assert_float_equal(used.left, faces[0].left, 0);
    assert_float_equal(used.bottom, faces[0].bottom, 0);
    /* cap smaller than the count: count still reports all */
    assert_int_equal(fv_detect(engine, group, NULL, faces, 1, &n, err, sizeof err), FV_OK);
    assert_int_equal(n, 2);
    fv_image_destroy(cup);
    fv_image_destroy(group);
}

static void test_embed_chips_matches_embed_face(void **state) {
    (void)state;
    NEED_ENGINE();
    fv_image *img = load("lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg");
    fv_face_result fr;
    char err[256];
    assert_int_equal(fv_embed_face(engine, img, NULL, 0, &fr, err, sizeof err), FV_OK);
    unsigned char chip[FV_CHIP_SIZE * FV_CHIP_SIZE * 3];
    assert_int_equal(fv_face_chip(engine, img, &fr.face, chip), FV_OK);
    float emb[FV_EMBED_DIM];
    assert_int_equal(fv_embed_chips(engine, chip, 1, emb, err, sizeof err), FV_OK);
    assert_true(fv_distance(emb, fr.embedding) < 1e-5f);
    fv_image_destroy(img);
}

/* Embeds img's face with engine e through both paths: via_face from
 * fv_embed_face, via_chips from fv_embed_chips on its chip, and plain, the
 * chip through the shared engine (no flip, no jitter). */
static void embed_both_ways(fv_engine *e, const fv_image *img, float *via_face, float *via_chips,
                            float *plain) {
    char err[256] = "";
    fv_face_result fr;
    assert_int_equal(fv_embed_face(e, img, NULL, 0, &fr, err, sizeof err), FV_OK);
    memcpy(via_face, fr.embedding, sizeof fr.embedding);
    unsigned char chip[FV_CHIP_SIZE * FV_CHIP_SIZE * 3];
    assert_int_equal(fv_face_chip(e, img, &fr.face, chip), FV_OK);
    assert_int_equal(fv_embed_chips(e, chip, 1, via_chips, err, sizeof err), FV_OK);
    assert_int_equal(fv_embed_chips(engine, chip, 1, plain, err, sizeof err), FV_OK);
}

/* With a flip mode, fv_embed_chips and fv_embed_face give the same
 * embedding (they share the flip code), and it differs from the plain one:
 * the flip is really applied on both paths. */
static void test_embed_chips_applies_flip(void **state) {
    (void)state;
    NEED_ENGINE();
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.threads = 2;
    cfg.flip = FV_FLIP_UNIT;
    fv_engine *fe = NULL;
    char err[256] = "";
    assert_int_equal(fv_engine_create(&cfg, &fe, err, sizeof err), FV_OK);
    fv_image *img = load("lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg");
    float face[FV_EMBED_DIM], flipped[FV_EMBED_DIM], plain[FV_EMBED_DIM];
    embed_both_ways(fe, img, face, flipped, plain);
    assert_memory_equal(flipped, face, sizeof flipped);
    assert_true(fv_distance(plain, flipped) > 1e-4f);
    fv_engine_destroy(fe);
    fv_image_destroy(img);
}

/* fv_config.jitters: out-of-range counts are refused; the jittered
 * embedding is the same on every call and through both paths (the
 * transforms are fixed), stays near the plain one (the copies are the same
 * face) without being it, and is refused an FMR operating point (the
 * calibration is the plain ResNet's). */
static void test_jitters_fixed_and_uncalibrated(void **state) {
    (void)state;
    NEED_ENGINE();
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.threads = 2;
    fv_engine *je = NULL;
    char err[256] = "";
    cfg.jitters = FV_MAX_JITTERS + 1;
    assert_int_equal(fv_engine_create(&cfg, &je, err, sizeof err), FV_E_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "jitters"));
    cfg.jitters = -1;
    assert_int_equal(fv_engine_create(&cfg, &je, err, sizeof err), FV_E_INVALID_ARGUMENT);
    cfg.jitters = 6;
    assert_int_equal(fv_engine_create(&cfg, &je, err, sizeof err), FV_OK);
    fv_image *img = load("lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg");
    float face[FV_EMBED_DIM], j1[FV_EMBED_DIM], j2[FV_EMBED_DIM], plain[FV_EMBED_DIM];
    embed_both_ways(je, img, face, j1, plain);
    embed_both_ways(je, img, face, j2, plain);
    assert_memory_equal(j1, j2, sizeof j1);
    assert_memory_equal(j1, face, sizeof j1);
    float d = fv_distance(plain, j1);
    assert_true(d > 1e-3f);
    assert_true(d < 0.15f);
    fv_verify_options vo;
    fv_verify_options_init(&vo);
    vo.fmr = 1e-3;
    fv_verify_result r;
    assert_int_equal(fv_verify(je, img, img, &vo, &r, err, sizeof err), FV_E_UNSUPPORTED);
    assert_non_null(strstr(err, "jitter"));
    fv_engine_destroy(je);
    fv_image_destroy(img);
}

/* Writes a small adapter (128 -> 8, unit length) as `faceverify train`
 * would and loads it through the public API. */
static fv_model *make_adapter(const char *path, float threshold) {
    const fvt_layer spec[] = {{.kind = FVT_FC, .a = 8}, {.kind = FVT_L2NORM}};
    fvt_net *net = NULL;
    char err[256] = "";
    assert_int_equal(fvt_net_create(spec, 2, FV_EMBED_DIM, 1, 1, &net, err, sizeof err), FV_OK);
    fvt_net_init(net, 7);
    fvt_meta meta = {0};
    snprintf(meta.kind, sizeof meta.kind, "adapter");
    meta.norm_std = 1.0f;
    meta.threshold = threshold;
    assert_int_equal(fvt_model_save(path, net, &meta, NULL, NULL, err, sizeof err), FV_OK);
    fvt_net_destroy(net);
    fv_model *m = NULL;
    assert_int_equal(fv_model_load(path, &m, err, sizeof err), FV_OK);
    return m;
}

/* fv_verify with opt.model goes through the same detection, landmarks and
 * chip as without: same faces (bitwise), landmarks timed, and only the
 * embedding step differs (the model's, zero-padded); the model's id and
 * calibrated threshold are the result's. */
static void test_verify_with_model_is_the_same_path(void **state) {
    (void)state;
    NEED_ENGINE();
    char path[128], err[256] = "";
    snprintf(path, sizeof path, "/tmp/fv_test_engine_%ld.fvm", (long)getpid());
    fv_model *m = make_adapter(path, 0.321f);
    remove(path);
    fv_image *a = load("samples/openface/clapton-1.jpg");
    fv_image *b = load("samples/openface/clapton-2.jpg");
    fv_verify_options opt;
    fv_verify_options_init(&opt);
    assert_null(opt.model);
    fv_verify_result plain, mr;
    assert_int_equal(fv_verify(engine, a, b, &opt, &plain, err, sizeof err), FV_OK);
    opt.model = m;
    assert_int_equal(fv_verify(engine, a, b, &opt, &mr, err, sizeof err), FV_OK);
    assert_string_equal(plain.model, FV_MODEL_ID);
    assert_string_equal(mr.model, fv_model_id(m));
    assert_float_equal(mr.threshold, fv_model_threshold(m), 0);
    assert_float_equal(plain.threshold, fv_engine_threshold(engine), 0);
    assert_memory_equal(&mr.a.face, &plain.a.face, sizeof mr.a.face);
    assert_memory_equal(&mr.b.face, &plain.b.face, sizeof mr.b.face);
    assert_int_equal(mr.a.faces, plain.a.faces);
    assert_true(mr.a.timings.landmarks_ms > 0 && mr.b.timings.landmarks_ms > 0);
    assert_true(mr.a.face.landmarks[0].x > mr.a.face.left);
    /* the embedding is the model's on the same chip, padded with zeros */
    unsigned char chip[FV_CHIP_SIZE * FV_CHIP_SIZE * 3];
    assert_int_equal(fv_face_chip(engine, a, &mr.a.face, chip), FV_OK);
    float e8[8];
    assert_int_equal(fv_model_embed_chips(engine, m, chip, 1, e8, err, sizeof err), FV_OK);
    assert_memory_equal(mr.a.embedding, e8, sizeof e8);
    for (int i = 8; i < FV_EMBED_DIM; i++) assert_true(mr.a.embedding[i] == 0.0f);
    assert_float_equal(mr.distance, fv_distance(mr.a.embedding, mr.b.embedding), 0);
    assert_int_equal(mr.verified, mr.distance <= mr.threshold);
    /* model NULL is the ResNet: fv_model_embed_face == fv_embed_face */
    fv_face_result r1, r2;
    assert_int_equal(fv_model_embed_face(engine, NULL, a, NULL, 0, &r1, err, sizeof err), FV_OK);
    assert_int_equal(fv_embed_face(engine, a, NULL, 0, &r2, err, sizeof err), FV_OK);
    assert_memory_equal(r1.embedding, r2.embedding, sizeof r1.embedding);
    assert_memory_equal(r1.embedding, plain.a.embedding, sizeof r1.embedding);
    /* errors name the image on the model path too */
    fv_image *cup = load("samples/openface/longoria-cooper.jpg");
    opt.strict = 1;
    err[0] = '\0';
    assert_int_equal(fv_verify(engine, cup, b, &opt, &mr, err, sizeof err), FV_E_MULTIPLE_FACES);
    assert_non_null(strstr(err, "image a: "));
    fv_image_destroy(cup);
    fv_image_destroy(a);
    fv_image_destroy(b);
    fv_model_destroy(m);
}

typedef struct {
    const fv_image *img;
    float emb[FV_EMBED_DIM];
    fv_status st;
} job;

static void *worker(void *arg) {
    job *j = arg;
    fv_face_result fr;
    for (int rep = 0; rep < 3; rep++) {
        j->st = fv_embed_face(engine, j->img, NULL, 0, &fr, NULL, 0);
        if (j->st != FV_OK) return NULL;
        if (rep > 0 && fv_distance(fr.embedding, j->emb) != 0.0f) j->st = FV_E_INTERNAL;
        memcpy(j->emb, fr.embedding, sizeof j->emb);
    }
    return NULL;
}

static void test_concurrent_calls_share_one_engine(void **state) {
    (void)state;
    NEED_ENGINE();
    const char *paths[] = {"lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg",
                           "lfw/Tony_Blair/Tony_Blair_0001.jpg", "samples/openface/clapton-2.jpg"};
    enum { N = 3 };
    fv_image *imgs[N];
    job jobs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        imgs[i] = load(paths[i]);
        jobs[i].img = imgs[i];
    }
    for (int i = 0; i < N; i++) assert_int_equal(pthread_create(&th[i], NULL, worker, &jobs[i]), 0);
    for (int i = 0; i < N; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < N; i++) {
        assert_int_equal(jobs[i].st, FV_OK);
        fv_face_result fr;
        assert_int_equal(fv_embed_face(engine, imgs[i], NULL, 0, &fr, NULL, 0), FV_OK);
        assert_true(fv_distance(fr.embedding, jobs[i].emb) == 0.0f);
        fv_image_destroy(imgs[i]);
    }
}

static void test_out_of_memory_everywhere(void **state) {
    (void)state;
    NEED_ENGINE();
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.threads = 1; /* the failure counter is process-global */
    fv_image *a = load("lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg");
    /* engine creation */
    int ok_at = -1;
    for (long k = 0; k < 100000 && ok_at < 0; k++) {
        fv_engine *e = NULL;
        fvi_alloc_fail_after(k);
        fv_status st = fv_engine_create(&cfg, &e, NULL, 0);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK)
            ok_at = (int)k;
        else
            assert_int_equal(st, FV_E_NO_MEMORY);
        fv_engine_destroy(e);
    }
    assert_true(ok_at > 0);
    /* a whole verification */
    fv_engine *e = NULL;
    assert_int_equal(fv_engine_create(&cfg, &e, NULL, 0), FV_OK);
    fv_verify_options opt;
    fv_verify_options_init(&opt);
    opt.detect.upsample = 0;
    ok_at = -1;
    for (long k = 0; k < 100000 && ok_at < 0; k++) {
        fv_verify_result r;
        fvi_alloc_fail_after(k);
        fv_status st = fv_verify(e, a, a, &opt, &r, NULL, 0);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK) {
            ok_at = (int)k;
            assert_true(r.verified);
        } else {
            assert_int_equal(st, FV_E_NO_MEMORY);
        }
    }
    assert_true(ok_at > 0);
    fv_engine_destroy(e);
    fv_image_destroy(a);
}

/* The automatic scale policy's proposal and crop passes (scales.c) under
 * allocation failure: an LFW photo shrunk so its face is ~40 px (below the
 * base pass's 80 px) on a grey 320x240 canvas, found only through a Haar
 * proposal and an MMOD crop; every failure is FV_E_NO_MEMORY, and once
 * allocations succeed the small face is found.  Skipped without the
 * default cascade (no proposals then). */
static void test_scale_policy_out_of_memory(void **state) {
    (void)state;
    NEED_ENGINE();
    const char *cd = getenv("FACEVERIFY_CASCADES");
    char cpath[2400];
    snprintf(cpath, sizeof cpath, "%s/haarcascade_frontalface_default.xml",
             cd && *cd ? cd : "/usr/share/opencv4/haarcascades");
    if (access(cpath, R_OK) != 0) skip();
    fv_image *a = load("lfw/Aaron_Eckhart/Aaron_Eckhart_0001.jpg"), *small = NULL, *canvas = NULL;
    assert_int_equal(fvi_image_downscale(a, 100, 100, &small), FV_OK);
    assert_int_equal(fvi_image_alloc(320, 240, &canvas), FV_OK);
    memset(canvas->rgb, 120, (size_t)320 * 240 * 3);
    for (int y = 0; y < 100; y++)
        memcpy(canvas->rgb + ((size_t)(y + 90) * 320 + 180) * 3, small->rgb + (size_t)y * 100 * 3,
               100 * 3);
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.threads = 1; /* the failure counter is process-global */
    fv_engine *e = NULL;
    assert_int_equal(fv_engine_create(&cfg, &e, NULL, 0), FV_OK);
    fv_detect_options opt;
    fv_detect_options_init(&opt);
    opt.detector = FV_DETECTOR_MMOD; /* MMOD's scale policy */
    fv_face faces[4];
    size_t n = 0;
    int ok_at = -1;
    for (long k = 0; k < 100000 && ok_at < 0; k++) {
        fvi_alloc_fail_after(k);
        fv_status st = fv_detect(e, canvas, &opt, faces, 4, &n, NULL, 0);
        fvi_alloc_fail_after(-1);
        if (st == FV_OK)
            ok_at = (int)k;
        else
            assert_int_equal(st, FV_E_NO_MEMORY);
    }
    assert_true(ok_at > 0);
    assert_int_equal(n, 1);
    float side = faces[0].right - faces[0].left;
    assert_true(side > 25 && side < 60);
    assert_true(faces[0].left > 180 && faces[0].right < 280);
    /* the exact single pass (upsample 0) cannot see it */
    opt.upsample = 0;
    assert_int_equal(fv_detect(e, canvas, &opt, faces, 4, &n, NULL, 0), FV_OK);
    assert_int_equal(n, 0);
    fv_engine_destroy(e);
    fv_image_destroy(canvas);
    fv_image_destroy(small);
    fv_image_destroy(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verify_same_and_different),
        cmocka_unit_test(test_auto_detector_resolves),
        cmocka_unit_test(test_auto_detector_without_mtcnn),
        cmocka_unit_test(test_no_face_and_strict),
        cmocka_unit_test(test_embed_chips_matches_embed_face),
        cmocka_unit_test(test_embed_chips_applies_flip),
        cmocka_unit_test(test_jitters_fixed_and_uncalibrated),
        cmocka_unit_test(test_verify_with_model_is_the_same_path),
        cmocka_unit_test(test_concurrent_calls_share_one_engine),
        cmocka_unit_test(test_out_of_memory_everywhere),
        cmocka_unit_test(test_scale_policy_out_of_memory),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
