/*
 * test_files.c: every file the library reads goes through one reader
 * (fvi_read_file), so the same failure gives the same status whichever
 * file it hits.  Each of the five model readers (MMOD, ResNet, shape
 * predictor, Haar cascade, trained model) gets a missing file, a
 * directory, a file above every cap (sparse, so it costs no disk), an
 * empty file and a few bytes of garbage; the statuses must agree per kind
 * of failure and the message must name the file.  fv_image_load follows
 * the same mapping with its own statuses, and fv_engine_create reports a
 * model folder entry that is a directory as FV_E_IO like the rest.  Needs
 * no model files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "align/align.h"
#include "detect/haar.h"
#include "detect/mmod.h"
#include "embed/embed.h"
#include "core/fvi.h"

/* One reader under test: loads path, frees what it loaded. */
typedef struct {
    const char *name;
    fv_status (*load)(const char *path, char *err, size_t errlen);
} reader;

static fv_status load_mmod(const char *path, char *err, size_t errlen) {
    fvi_mmod *m = NULL;
    fv_status st = fvi_mmod_load(path, &m, err, errlen);
    fvi_mmod_destroy(m);
    return st;
}

static fv_status load_resnet(const char *path, char *err, size_t errlen) {
    fvi_resnet *r = NULL;
    fv_status st = fvi_resnet_load(path, &r, err, errlen);
    fvi_resnet_destroy(r);
    return st;
}

static fv_status load_sp(const char *path, char *err, size_t errlen) {
    fvi_shape_predictor *sp = NULL;
    fv_status st = fvi_shape_predictor_load(path, &sp, err, errlen);
    fvi_shape_predictor_destroy(sp);
    return st;
}

static fv_status load_haar(const char *path, char *err, size_t errlen) {
    fvi_haar *h = NULL;
    fv_status st = fvi_haar_load(path, &h, err, errlen);
    fvi_haar_destroy(h);
    return st;
}

static fv_status load_model(const char *path, char *err, size_t errlen) {
    fv_model *m = NULL;
    fv_status st = fv_model_load(path, &m, err, errlen);
    fv_model_destroy(m);
    return st;
}

static const reader READERS[] = {
    {"mmod", load_mmod}, {"resnet", load_resnet}, {"shape predictor", load_sp},
    {"haar", load_haar}, {"model", load_model},
};
#define NREADERS (sizeof READERS / sizeof *READERS)

/* Above every reader's cap (the largest is the shape predictor's 512 MiB). */
#define HUGE_BYTES ((off_t)513 << 20)

static char dir[256];

static void path_in(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", dir, name);
}

static void write_file(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(bytes, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/fv_test_files_%ld", (long)getpid());
    if (mkdir(dir, 0700) != 0) return -1;
    char p[512];
    path_in(p, sizeof p, "subdir");
    if (mkdir(p, 0700) != 0) return -1;
    path_in(p, sizeof p, "huge.dat");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, HUGE_BYTES) != 0) return -1; /* sparse: no disk used */
    close(fd);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    const char *names[] = {"huge.dat", "empty.dat", "garbage.dat", "locked.dat", "subdir"};
    char p[512];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        path_in(p, sizeof p, names[i]);
        remove(p);
    }
    rmdir(dir);
    return 0;
}

/* Every reader gives `want` for path, with path in the message. */
static void all_readers(const char *path, fv_status want) {
    for (size_t i = 0; i < NREADERS; i++) {
        char err[512] = "";
        fv_status st = READERS[i].load(path, err, sizeof err);
        if (st != want)
            fail_msg("%s reader on %s: %s, expected %s (%s)", READERS[i].name, path,
                     fv_status_name(st), fv_status_name(want), err);
        if (!strstr(err, path))
            fail_msg("%s reader: message \"%s\" does not name %s", READERS[i].name, err, path);
    }
}

static void test_missing_file_is_model_missing(void **state) {
    (void)state;
    all_readers("/nonexistent/faceverify/file.dat", FV_E_MODEL_MISSING);
}

static void test_directory_is_io(void **state) {
    (void)state;
    char p[512];
    path_in(p, sizeof p, "subdir");
    all_readers(p, FV_E_IO);
}

static void test_oversized_is_corrupt_before_reading(void **state) {
    (void)state;
    char p[512];
    path_in(p, sizeof p, "huge.dat");
    all_readers(p, FV_E_MODEL_CORRUPT);
}

static void test_empty_and_garbage_are_corrupt(void **state) {
    (void)state;
    char p[512];
    path_in(p, sizeof p, "empty.dat");
    write_file(p, "", 0);
    all_readers(p, FV_E_MODEL_CORRUPT);
    path_in(p, sizeof p, "garbage.dat");
    write_file(p, "\x03\xff\x12truncated", 12);
    all_readers(p, FV_E_MODEL_CORRUPT);
}

static void test_unreadable_is_io(void **state) {
    (void)state;
    if (geteuid() == 0) skip(); /* root reads any file */
    char p[512];
    path_in(p, sizeof p, "locked.dat");
    write_file(p, "x", 1);
    assert_int_equal(chmod(p, 0), 0);
    all_readers(p, FV_E_IO);
}

/* Images use the same reader with their own statuses for absent (the
 * caller's input: FV_E_IO) and too large (FV_E_IMAGE_TOO_LARGE). */
static void test_image_load_mapping(void **state) {
    (void)state;
    fv_image *img = NULL;
    char err[512] = "", p[512];
    assert_int_equal(fv_image_load("/nonexistent/x.jpg", NULL, &img, err, sizeof err), FV_E_IO);
    assert_non_null(strstr(err, "/nonexistent/x.jpg"));
    path_in(p, sizeof p, "subdir");
    assert_int_equal(fv_image_load(p, NULL, &img, err, sizeof err), FV_E_IO);
    path_in(p, sizeof p, "huge.dat");
    assert_int_equal(fv_image_load(p, NULL, &img, err, sizeof err), FV_E_IMAGE_TOO_LARGE);
    assert_non_null(strstr(err, "exceed"));
    assert_null(img);
}

/* fv_engine_create passes the reader's status through: a models folder
 * whose detector is a directory is FV_E_IO, like any unreadable file. */
static void test_engine_create_reports_the_reader_status(void **state) {
    (void)state;
    char p[512];
    path_in(p, sizeof p, "mmod_human_face_detector.dat");
    assert_int_equal(mkdir(p, 0700), 0);
    fv_config cfg;
    fv_config_init(&cfg);
    cfg.models_dir = dir;
    cfg.threads = 1;
    fv_engine *eng = NULL;
    char err[512] = "";
    fv_status st = fv_engine_create(&cfg, &eng, err, sizeof err);
    rmdir(p);
    assert_int_equal(st, FV_E_IO);
    assert_null(eng);
    assert_non_null(strstr(err, p));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_missing_file_is_model_missing),
        cmocka_unit_test(test_directory_is_io),
        cmocka_unit_test(test_oversized_is_corrupt_before_reading),
        cmocka_unit_test(test_empty_and_garbage_are_corrupt),
        cmocka_unit_test(test_unreadable_is_io),
        cmocka_unit_test(test_image_load_mapping),
        cmocka_unit_test(test_engine_create_reports_the_reader_status),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
