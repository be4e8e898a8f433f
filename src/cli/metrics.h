/*
 * metrics.h: verification metrics over scored pairs (distance, same?).
 *
 * Used by `faceverify eval-pairs` (and the LFW protocol later).  A lower
 * distance means "more likely the same person"; a pair is called "same"
 * when distance <= threshold.
 */
#ifndef CLI_METRICS_H
#define CLI_METRICS_H

#include <stddef.h>

typedef struct fv_pair_score {
    double distance;
    int same;
    int fold;   /* cli_metric_folds: the fold this pair belongs to (0-based) */
    int failed; /* cli_metric_folds: no distance (an image failed); an error */
} fv_pair_score;

/* Fraction of pairs classified correctly at threshold t. */
double cli_metric_accuracy(const fv_pair_score *p, size_t n, double t);

/* The threshold maximising accuracy (midpoint between neighbouring sorted
 * distances; ties broken towards the lower threshold) and that accuracy.
 * Sorts a private copy; returns -1 on allocation failure or n == 0. */
int cli_metric_best_threshold(const fv_pair_score *p, size_t n, double *t, double *acc);

/* Area under the ROC curve (probability that a random same pair is closer
 * than a random different pair, ties counted half).  NaN when one class is
 * empty or on allocation failure. */
double cli_metric_roc_auc(const fv_pair_score *p, size_t n);

/* True accept rate at the largest threshold whose false accept rate is at
 * most far.  Returns -1 when there are fewer than 1/far different pairs
 * (the rate cannot be measured) or on allocation failure; *thr receives the
 * threshold used. */
double cli_metric_tar_at_far(const fv_pair_score *p, size_t n, double far, double *thr);

/* The LFW View 2 protocol: for each fold k of nfolds, the best-accuracy
 * threshold over the pairs of the other folds (cli_metric_best_threshold,
 * failed pairs left out) is applied to fold k.  acc[k]: correct pairs of
 * fold k over all pairs of fold k, so a failed pair counts as an error;
 * thr[k]: the threshold used.  Returns -1 when nfolds < 2, a fold id is
 * out of range, a fold has no pairs or no scored pairs outside it, or on
 * allocation failure. */
int cli_metric_folds(const fv_pair_score *p, size_t n, int nfolds, double *acc, double *thr);

/* Mean and sample standard deviation (n - 1 in the denominator; 0 for
 * n == 1) of v[0..n). */
void cli_metric_mean_std(const double *v, size_t n, double *mean, double *std);

typedef struct fv_dist_summary {
    size_t count;
    double min, p05, median, mean, p95, max;
} fv_dist_summary;

/* Summary of the distances of the pairs whose same == same_class. */
void cli_metric_summary(const fv_pair_score *p, size_t n, int same_class, fv_dist_summary *out);

#endif
