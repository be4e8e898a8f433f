/*
 * test_metrics.c: the verification metrics of eval-pairs on hand-made
 * pairs whose answers are worked out by hand.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>

#include "cli/metrics.h"

/* same pairs at 0.1, 0.2, 0.5; different at 0.4, 0.6, 0.7 */
static const fv_pair_score P[] = {{0.1, 1, 0, 0}, {0.2, 1, 0, 0}, {0.5, 1, 0, 0},
                                  {0.4, 0, 0, 0}, {0.6, 0, 0, 0}, {0.7, 0, 0, 0}};
#define NP (sizeof P / sizeof *P)

static void test_accuracy(void **state) {
    (void)state;
    assert_float_equal(cli_metric_accuracy(P, NP, 0.3), 5.0 / 6.0, 1e-12);
    assert_float_equal(cli_metric_accuracy(P, NP, 0.55), 5.0 / 6.0, 1e-12);
    assert_float_equal(cli_metric_accuracy(P, NP, 0.0), 0.5, 1e-12);
    assert_float_equal(cli_metric_accuracy(P, NP, 1.0), 0.5, 1e-12);
}

static void test_best_threshold(void **state) {
    (void)state;
    double t, acc;
    assert_int_equal(cli_metric_best_threshold(P, NP, &t, &acc), 0);
    assert_float_equal(acc, 5.0 / 6.0, 1e-12);
    /* the first best cut: between 0.2 and 0.4 */
    assert_float_equal(t, 0.3, 1e-12);
    const fv_pair_score sep[] = {{0.1, 1, 0, 0}, {0.3, 1, 0, 0}, {0.9, 0, 0, 0}, {1.1, 0, 0, 0}};
    assert_int_equal(cli_metric_best_threshold(sep, 4, &t, &acc), 0);
    assert_float_equal(acc, 1.0, 0);
    assert_float_equal(t, 0.6, 1e-12);
}

static void test_roc_auc(void **state) {
    (void)state;
    /* same-vs-different orderings: 0.1,0.2 beat all three (6); 0.5 beats
     * 0.6 and 0.7 (2): 8 of 9 */
    assert_float_equal(cli_metric_roc_auc(P, NP), 8.0 / 9.0, 1e-12);
    const fv_pair_score tie[] = {{0.5, 1, 0, 0}, {0.5, 0, 0, 0}};
    assert_float_equal(cli_metric_roc_auc(tie, 2), 0.5, 1e-12);
    const fv_pair_score one[] = {{0.5, 1, 0, 0}};
    assert_true(isnan(cli_metric_roc_auc(one, 1)));
}

static void test_tar_at_far(void **state) {
    (void)state;
    /* 100 different pairs at 1.00..1.99 and 4 same pairs at 0.5, 0.9, 1.005, 1.5 */
    fv_pair_score p[104];
    for (int i = 0; i < 100; i++) p[i] = (fv_pair_score){1.0 + i * 0.01, 0, 0, 0};
    p[100] = (fv_pair_score){0.5, 1, 0, 0};
    p[101] = (fv_pair_score){0.9, 1, 0, 0};
    p[102] = (fv_pair_score){1.005, 1, 0, 0};
    p[103] = (fv_pair_score){1.5, 1, 0, 0};
    double thr;
    double tar = cli_metric_tar_at_far(p, 104, 1e-2, &thr);
    /* accepting the different pair at 1.00 is allowed; the next (1.005, same)
     * is accepted too before the second different pair at 1.01 */
    assert_float_equal(tar, 3.0 / 4.0, 1e-12);
    assert_float_equal(thr, 1.005, 1e-12);
    /* FAR 1e-3 needs 1000 different pairs */
    assert_float_equal(cli_metric_tar_at_far(p, 104, 1e-3, &thr), -1, 0);
}

/* Three folds of four pairs; one pair of fold 2 failed (no distance).
 * Worked by hand: fold 0 is tested at the best cut of folds 1+2 (0.575:
 * between 0.45 same and 0.7 different) and gets 3/4 (0.3 different is
 * accepted); fold 1 at the first best cut of folds 0+2 (0.2) gets 3/4 (0.4
 * same is rejected); fold 2 at 0.55 gets 2/4 (the failed pair and 0.35
 * different are errors). */
static void test_folds(void **state) {
    (void)state;
    const fv_pair_score f[] = {
        {0.1, 1, 0, 0}, {0.5, 1, 0, 0},  {0.6, 0, 0, 0}, {0.3, 0, 0, 0},
        {0.2, 1, 1, 0}, {0.4, 1, 1, 0},  {0.7, 0, 1, 0}, {0.8, 0, 1, 0},
        {0.3, 1, 2, 1}, {0.45, 1, 2, 0}, {0.9, 0, 2, 0}, {0.35, 0, 2, 0},
    };
    double acc[3], thr[3], mean, std;
    assert_int_equal(cli_metric_folds(f, 12, 3, acc, thr), 0);
    assert_float_equal(thr[0], 0.575, 1e-12);
    assert_float_equal(thr[1], 0.2, 1e-12);
    assert_float_equal(thr[2], 0.55, 1e-12);
    assert_float_equal(acc[0], 0.75, 1e-12);
    assert_float_equal(acc[1], 0.75, 1e-12);
    assert_float_equal(acc[2], 0.5, 1e-12);
    cli_metric_mean_std(acc, 3, &mean, &std);
    assert_float_equal(mean, 2.0 / 3.0, 1e-12);
    assert_float_equal(std, sqrt(0.125 / 6.0), 1e-12);
    /* bad fold ids and too few folds are refused */
    assert_int_equal(cli_metric_folds(f, 12, 2, acc, thr), -1);
    assert_int_equal(cli_metric_folds(f, 12, 1, acc, thr), -1);
}

static void test_summary(void **state) {
    (void)state;
    fv_dist_summary s;
    cli_metric_summary(P, NP, 1, &s);
    assert_int_equal(s.count, 3);
    assert_float_equal(s.min, 0.1, 1e-12);
    assert_float_equal(s.median, 0.2, 1e-12);
    assert_float_equal(s.max, 0.5, 1e-12);
    assert_float_equal(s.mean, 0.8 / 3.0, 1e-12);
    cli_metric_summary(P, NP, 0, &s);
    assert_float_equal(s.median, 0.6, 1e-12);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accuracy), cmocka_unit_test(test_best_threshold),
        cmocka_unit_test(test_roc_auc),  cmocka_unit_test(test_tar_at_far),
        cmocka_unit_test(test_summary),  cmocka_unit_test(test_folds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
