/*
 * test_haar.c: the Haar cascade loader and detector (src/detect/haar.c).
 *
 * Loads OpenCV's frontal face cascades (stump and tree shaped) when they
 * are installed (FACEVERIFY_CASCADES or /usr/share/opencv4/haarcascades;
 * skipped otherwise unless FACEVERIFY_REQUIRE_DATA=1), and feeds the parser
 * a small hand-written cascade and many broken or hostile variants of it:
 * each must give FV_E_MODEL_CORRUPT (or FV_E_UNSUPPORTED for well-formed
 * kinds we do not handle) without crashing or leaking (run under ASan).
 * Allocation failures are injected into loading and detection.  With the
 * models (FACEVERIFY_MODELS, set by ctest), the engine path is checked too:
 * FV_DETECTOR_HAAR through fv_detect, and an engine whose cascade is
 * missing still serves MMOD and reports the cascade only when asked.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detect/haar.h"
#include "core/fvi.h"
#include "core/workers.h"

/* A 6x6 cascade: one stage, one stump on "right half minus left half",
 * so windows brighter on the right pass.  Placeholders let tests break
 * one part at a time. */
static const char *TEMPLATE =
    "<?xml version=\"1.0\"?>\n<opencv_storage>\n"
    "<cascade type_id=\"opencv-cascade-classifier\"><stageType>%s</stageType>\n"
    "<featureType>%s</featureType><height>%s</height><width>%s</width>\n"
    "<stageParams><maxWeakCount>1</maxWeakCount></stageParams>\n"
    "<featureParams><maxCatCount>0</maxCatCount></featureParams>\n"
    "<stageNum>1</stageNum><stages><_><maxWeakCount>1</maxWeakCount>\n"
    "<stageThreshold>%s</stageThreshold><weakClassifiers>\n"
    "<_><internalNodes>%s</internalNodes><leafValues>%s</leafValues></_>\n"
    "</weakClassifiers></_></stages>\n"
    "<features><_><rects>%s</rects>%s</_></features></cascade></opencv_storage>\n";

typedef struct parts {
    const char *stage_type, *feature_type, *height, *width, *stage_thr, *nodes, *leaves, *rects,
        *tilted;
} parts;

static const parts GOOD = {"BOOST", "HAAR",       "6",      "6",
                           "0.5",   "0 -1 0 0.0", "-1. 1.", "<_>0 0 3 6 -1.</_><_>3 0 3 6 1.</_>",
                           ""};

static char *make_xml(const parts *p) {
    size_t cap = 8192;
    char *buf = malloc(cap);
    assert_non_null(buf);
    int n = snprintf(buf, cap, TEMPLATE, p->stage_type, p->feature_type, p->height, p->width,
                     p->stage_thr, p->nodes, p->leaves, p->rects, p->tilted);
    assert_true(n > 0 && (size_t)n < cap);
    return buf;
}

static fv_status parse_parts(const parts *p, fvi_haar **h) {
    char *xml = make_xml(p);
    char err[256] = "";
    fv_status st = fvi_haar_parse(xml, strlen(xml), h, err, sizeof err);
    if (st != FV_OK) assert_true(strlen(err) > 0);
    free(xml);
    return st;
}

static const char *cascade_dir(void) {
    const char *d = getenv("FACEVERIFY_CASCADES");
    return d && *d ? d : "/usr/share/opencv4/haarcascades";
}

static int require_data(void) {
    const char *r = getenv("FACEVERIFY_REQUIRE_DATA");
    return r && !strcmp(r, "1");
}

/* Loads a shipped cascade; NULL (test skipped) when it is not installed. */
static fvi_haar *load_shipped(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", cascade_dir(), name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (require_data()) fail_msg("cascade %s missing and FACEVERIFY_REQUIRE_DATA=1", path);
        return NULL;
    }
    fclose(f);
    fvi_haar *h = NULL;
    char err[256];
    fv_status st = fvi_haar_load(path, &h, err, sizeof err);
    if (st != FV_OK) fail_msg("%s: %s", path, err);
    return h;
}

static void test_good_synthetic(void **state) {
    (void)state;
    fvi_haar *h = NULL;
    assert_int_equal(parse_parts(&GOOD, &h), FV_OK);
    int w, hh;
    fvi_haar_window(h, &w, &hh);
    assert_int_equal(w, 6);
    assert_int_equal(hh, 6);
    /* 24x12 grey: dark left, bright right: windows over the edge pass */
    unsigned char img[12 * 24];
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 24; x++) img[y * 24 + x] = x < 12 ? 20 : 200;
    fvi_haar_params p = {1.1, 0, 0, 0};
    fvi_haar_rect *r = NULL;
    size_t n = 0;
    char err[256];
    assert_int_equal(fvi_haar_detect_gray(h, img, 24, 12, &p, NULL, &r, &n, err, sizeof err),
                     FV_OK);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        assert_true(r[i].x <= 12 && r[i].x + r[i].w >= 12); /* straddles the edge */
        assert_true(r[i].x >= 0 && r[i].y >= 0 && r[i].x + r[i].w <= 24 && r[i].y + r[i].h <= 12);
    }
    fvi_free(r);
    /* mirrored: bright left, dark right never passes */
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 24; x++) img[y * 24 + x] = x < 12 ? 200 : 20;
    assert_int_equal(fvi_haar_detect_gray(h, img, 24, 12, &p, NULL, &r, &n, err, sizeof err),
                     FV_OK);
    assert_int_equal(n, 0);
    assert_null(r);
    /* grouped: every hit overlaps, so one box remains with min neighbours 1 */
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 24; x++) img[y * 24 + x] = x < 12 ? 20 : 200;
    p.min_neighbors = 1;
    assert_int_equal(fvi_haar_detect_gray(h, img, 24, 12, &p, NULL, &r, &n, err, sizeof err),
                     FV_OK);
    assert_true(n >= 1 && n <= 3);
    assert_true(r[0].neighbors >= 2);
    fvi_free(r);
    /* bad parameters */
    p.scale_factor = 1.0;
    assert_int_equal(fvi_haar_detect_gray(h, img, 24, 12, &p, NULL, &r, &n, err, sizeof err),
                     FV_E_INVALID_ARGUMENT);
    p.scale_factor = 1.1;
    p.min_neighbors = -1;
    assert_int_equal(fvi_haar_detect_gray(h, img, 24, 12, &p, NULL, &r, &n, err, sizeof err),
                     FV_E_INVALID_ARGUMENT);
    /* an image smaller than the window: nothing to scan */
    p.min_neighbors = 3;
    assert_int_equal(fvi_haar_detect_gray(h, img, 5, 5, &p, NULL, &r, &n, err, sizeof err), FV_OK);
    assert_int_equal(n, 0);
    fvi_haar_destroy(h);
    fvi_haar_destroy(NULL);
}

typedef struct bad_case {
    const char *what;
    parts p;
    fv_status want;
} bad_case;

static void test_corrupt_variants(void **state) {
    (void)state;
    const bad_case cases[] = {
        {"stage type",
         {"GENTLE", "HAAR", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"LBP",
         {"BOOST", "LBP", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_UNSUPPORTED},
        {"empty feature type",
         {"BOOST", "", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_UNSUPPORTED},
        {"negative width",
         {"BOOST", "HAAR", "6", "-6", "0.5", "0 -1 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"huge height",
         {"BOOST", "HAAR", "99999999", "6", "0.5", "0 -1 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"width not a number",
         {"BOOST", "HAAR", "6", "six", "0.5", "0 -1 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"fractional width",
         {"BOOST", "HAAR", "6", "6.5", "0.5", "0 -1 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"nan threshold",
         {"BOOST", "HAAR", "6", "6", "nan", "0 -1 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"inf threshold",
         {"BOOST", "HAAR", "6", "6", "1e999", "0 -1 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"no threshold",
         {"BOOST", "HAAR", "6", "6", "", "0 -1 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"3 node numbers",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"no nodes",
         {"BOOST", "HAAR", "6", "6", "0.5", "", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"too few leaves",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0 0.0", "-1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"too many leaves",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1. 2.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"feature index out of range",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 1 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"negative feature index",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 -1 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"huge feature index",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 4294967296 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"child points at itself",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0 0.0 1 -1 0 0.0", "-1. 1. 2.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"child out of tree",
         {"BOOST", "HAAR", "6", "6", "0.5", "5 -1 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"leaf out of tree",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -7 0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
        {"rect outside window",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1.",
          "<_>0 0 3 6 -1.</_><_>4 0 3 6 1.</_>", ""},
         FV_E_MODEL_CORRUPT},
        {"negative rect",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1.",
          "<_>-1 0 3 6 -1.</_><_>3 0 3 6 1.</_>", ""},
         FV_E_MODEL_CORRUPT},
        {"empty rect",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1.",
          "<_>0 0 0 6 -1.</_><_>3 0 3 6 1.</_>", ""},
         FV_E_MODEL_CORRUPT},
        {"rect of 4 numbers",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1.", "<_>0 0 3 6</_>", ""},
         FV_E_MODEL_CORRUPT},
        {"4 rects",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1.",
          "<_>0 0 3 6 -1.</_><_>3 0 3 6 1.</_><_>3 0 3 6 1.</_><_>3 0 3 6 1.</_>", ""},
         FV_E_MODEL_CORRUPT},
        {"no rects",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1.", "", ""},
         FV_E_MODEL_CORRUPT},
        {"tilted",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1.", GOOD.rects,
          "<tilted>1</tilted>"},
         FV_E_UNSUPPORTED},
        {"bad tilted",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 0 0.0", "-1. 1.", GOOD.rects,
          "<tilted>7</tilted>"},
         FV_E_MODEL_CORRUPT},
        {"element in numbers",
         {"BOOST", "HAAR", "6", "6", "0.5", "0 -1 <x/>0 0.0", "-1. 1.", GOOD.rects, ""},
         FV_E_MODEL_CORRUPT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        fvi_haar *h = NULL;
        fv_status st = parse_parts(&cases[i].p, &h);
        if (st != cases[i].want)
            fail_msg("case '%s': got %d, want %d", cases[i].what, st, cases[i].want);
        assert_null(h);
    }
    /* a tilted flag of 0 is fine */
    parts ok = GOOD;
    ok.tilted = "<tilted>0</tilted>";
    fvi_haar *h = NULL;
    assert_int_equal(parse_parts(&ok, &h), FV_OK);
    fvi_haar_destroy(h);
}

static void test_not_a_cascade(void **state) {
    (void)state;
    const char *docs[] = {
        "",
        "not xml at all",
        "<?xml version=\"1.0\"?><opencv_storage></opencv_storage>",
        "<?xml version=\"1.0\"?><other><cascade/></other>",
        "<?xml "
        "version=\"1.0\"?><opencv_storage><cascade><stageType>BOOST</stageType></cascade></"
        "opencv_storage>",
        "<?xml "
        "version=\"1.0\"?><opencv_storage><cascade><stageType>BOOST</stageType><featureType>HAAR"
        "</featureType><width>6</width><height>6</height><stages/><features/></cascade></"
        "opencv_storage>",
        /* entity expansion ("billion laughs") must not be expanded */
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"1 1 1 1 1 1 1 1\"><!ENTITY b "
        "\"&a;&a;&a;&a;&a;"
        "&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;\">]><opencv_storage><cascade><stageType>"
        "BOOST</stageType><featureType>HAAR</featureType><width>&c;</width></cascade></"
        "opencv_storage>",
        /* external entity: no network, no file reads */
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>"
        "<opencv_storage><cascade><stageType>&e;</stageType></cascade></opencv_storage>",
        /* the old (pre-2.x) layout */
        "<?xml version=\"1.0\"?><opencv_storage><cascade "
        "type_id=\"opencv-haar-classifier\"><size>24 24"
        "</size><stages><_><trees/></_></stages></cascade></opencv_storage>",
    };
    for (size_t i = 0; i < sizeof docs / sizeof *docs; i++) {
        fvi_haar *h = (fvi_haar *)&docs; /* must be reset */
        char err[256];
        fv_status st = fvi_haar_parse(docs[i], strlen(docs[i]), &h, err, sizeof err);
        if (st != FV_E_MODEL_CORRUPT && st != FV_E_UNSUPPORTED)
            fail_msg("doc %zu: status %d", i, st);
        assert_null(h);
    }
    /* truncations of a good cascade at every length never crash */
    char *xml = make_xml(&GOOD);
    size_t len = strlen(xml);
    for (size_t cut = 0; cut < len; cut += 7) {
        fvi_haar *h = NULL;
        fv_status st = fvi_haar_parse(xml, cut, &h, NULL, 0);
        assert_true(st == FV_E_MODEL_CORRUPT ||
                    st == FV_OK); /* a cut in the trailing newline is fine */
        fvi_haar_destroy(h);
    }
    /* byte flips */
    for (size_t i = 0; i < len; i += 3) {
        char saved = xml[i];
        xml[i] = (char)(xml[i] ^ 0x5a);
        fvi_haar *h = NULL;
        fvi_haar_parse(xml, len, &h, NULL, 0);
        fvi_haar_destroy(h);
        xml[i] = saved;
    }
    free(xml);
    fvi_haar *h = NULL;
    assert_int_equal(fvi_haar_load("/nonexistent/cascade.xml", &h, NULL, 0), FV_E_MODEL_MISSING);
    /* a directory is unreadable, FV_E_IO, as for every file (test_files.c) */
    assert_int_equal(fvi_haar_load("/", &h, NULL, 0), FV_E_IO);
    assert_null(h);
}

static void test_alloc_failures(void **state) {
    (void)state;
    char *xml = make_xml(&GOOD);
    unsigned char img[12 * 24];
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 24; x++) img[y * 24 + x] = x < 12 ? 20 : 200;
    fvi_haar_params p = {1.1, 1, 0, 0};
    int saw_ok = 0;
    for (long k = 0; k < 60 && !saw_ok; k++) {
        fvi_haar *h = NULL;
        fvi_alloc_fail_after(k);
        fv_status st = fvi_haar_parse(xml, strlen(xml), &h, NULL, 0);
        fvi_alloc_fail_after(-1);
        assert_true(st == FV_OK || st == FV_E_NO_MEMORY);
        if (st == FV_OK) saw_ok = 1;
        fvi_haar_destroy(h);
    }
    assert_true(saw_ok);
    fvi_haar *h = NULL;
    assert_int_equal(fvi_haar_parse(xml, strlen(xml), &h, NULL, 0), FV_OK);
    saw_ok = 0;
    for (long k = 0; k < 200 && !saw_ok; k++) {
        fvi_haar_rect *r = NULL;
        size_t n = 0;
        fvi_alloc_fail_after(k);
        fv_status st = fvi_haar_detect_gray(h, img, 24, 12, &p, NULL, &r, &n, NULL, 0);
        fvi_alloc_fail_after(-1);
        assert_true(st == FV_OK || st == FV_E_NO_MEMORY);
        if (st == FV_OK) {
            saw_ok = 1;
            assert_true(n >= 1);
        }
        fvi_free(r);
    }
    assert_true(saw_ok);
    fvi_haar_destroy(h);
    free(xml);
}

static void test_shipped_cascades(void **state) {
    (void)state;
    fvi_haar *def = load_shipped("haarcascade_frontalface_default.xml");
    if (!def) skip();
    fvi_haar *alt2 = load_shipped("haarcascade_frontalface_alt2.xml"); /* tree-shaped */
    assert_non_null(alt2);
    int w, hh;
    fvi_haar_window(def, &w, &hh);
    assert_int_equal(w, 24);
    assert_int_equal(hh, 24);
    fvi_haar_window(alt2, &w, &hh);
    assert_int_equal(w, 20);
    assert_int_equal(hh, 20);
    /* a blank (and a flat grey) image has no faces, with a pool or not */
    fvi_workers *pool = fvi_workers_create(2);
    assert_non_null(pool);
    fv_image *img = NULL;
    unsigned char *rgb = calloc(320 * 240 * 3, 1);
    assert_non_null(rgb);
    for (int v = 0; v < 2; v++) {
        memset(rgb, v ? 128 : 0, 320 * 240 * 3);
        assert_int_equal(fv_image_from_rgb(rgb, 320, 240, &img), FV_OK);
        fvi_haar_params p = {1.1, 3, 0, 0};
        fv_face *f = NULL;
        size_t n = 99;
        assert_int_equal(fvi_haar_detect(def, img, &p, pool, &f, &n, NULL, 0), FV_OK);
        assert_int_equal(n, 0);
        assert_int_equal(fvi_haar_detect(alt2, img, &p, NULL, &f, &n, NULL, 0), FV_OK);
        assert_int_equal(n, 0);
        fv_image_destroy(img);
    }
    free(rgb);
    fvi_workers_destroy(pool);
    fvi_haar_destroy(def);
    fvi_haar_destroy(alt2);
}

/* The grey conversion is OpenCV's fixed-point BT.601 and the mapping to
 * dlib boxes keeps a box centred near where it was. */
static void test_gray_and_mapping(void **state) {
    (void)state;
    unsigned char rgb[4 * 3] = {255, 255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255};
    fv_image img = {4, 1, rgb};
    unsigned char g[4];
    fvi_haar_gray(&img, g);
    assert_int_equal(g[0], 255);
    assert_int_equal(g[1], 76);  /* 0.299 * 255 */
    assert_int_equal(g[2], 150); /* 0.587 * 255 */
    assert_int_equal(g[3], 29);  /* 0.114 * 255 */
    fv_face f = {100, 100, 200, 200, 5, {{0, 0}}};
    fvi_haar_box_to_dlib(&f);
    assert_true(f.right > f.left && f.bottom > f.top);
    assert_true(f.left > 50 && f.right < 250 && f.top > 50 && f.bottom < 250);
    assert_true(f.right - f.left > 50 && f.right - f.left < 150);
}

/* An engine, or NULL (skipped) without the models. */
static fv_engine *make_engine(const char *cascade) {
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.threads = 2;
    cfg.haar_cascade = cascade;
    fv_engine *eng = NULL;
    char err[256] = "";
    fv_status st = fv_engine_create(&cfg, &eng, err, sizeof err);
    if (st != FV_OK) {
        if (require_data()) fail_msg("engine: %s", err);
        return NULL;
    }
    return eng;
}

static void test_engine_haar(void **state) {
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/haarcascade_frontalface_default.xml", cascade_dir());
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (require_data()) fail_msg("cascade %s missing", path);
        skip();
    }
    fclose(f);
    fv_engine *eng = make_engine(NULL);
    if (!eng) skip();
    unsigned char *rgb = calloc(200 * 150 * 3, 1);
    assert_non_null(rgb);
    fv_image *img = NULL;
    assert_int_equal(fv_image_from_rgb(rgb, 200, 150, &img), FV_OK);
    fv_detect_options opt;
    fv_detect_options_init(&opt);
    assert_true(opt.haar_scale_factor > 1.09f && opt.haar_scale_factor < 1.11f);
    assert_int_equal(opt.haar_min_neighbors, 3);
    opt.detector = FV_DETECTOR_HAAR;
    fv_face faces[4];
    size_t n = 99;
    char err[256] = "";
    assert_int_equal(fv_detect(eng, img, &opt, faces, 4, &n, err, sizeof err), FV_OK);
    assert_int_equal(n, 0);
    opt.haar_scale_factor = 1.0f;
    assert_int_equal(fv_detect(eng, img, &opt, faces, 4, &n, err, sizeof err),
                     FV_E_INVALID_ARGUMENT);
    fv_engine_destroy(eng);

    eng = make_engine("/nonexistent/cascade.xml");
    assert_non_null(eng);
    fv_detect_options_init(&opt);
    assert_int_equal(fv_detect(eng, img, &opt, faces, 4, &n, err, sizeof err), FV_OK);
    opt.detector = FV_DETECTOR_HAAR;
    for (int k = 0; k < 2; k++) { /* the failure is remembered */
        assert_int_equal(fv_detect(eng, img, &opt, faces, 4, &n, err, sizeof err),
                         FV_E_MODEL_MISSING);
        assert_non_null(strstr(err, "cascade"));
    }
    fv_engine_destroy(eng);
    fv_image_destroy(img);
    free(rgb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_synthetic),   cmocka_unit_test(test_corrupt_variants),
        cmocka_unit_test(test_not_a_cascade),    cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_shipped_cascades), cmocka_unit_test(test_gray_and_mapping),
        cmocka_unit_test(test_engine_haar),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
