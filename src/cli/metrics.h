/*
 * metrics.h: verification metrics over scored pairs (distance, same?).
 *
 * Used by `faceverify eval-pairs` (and the LFW protocol later).  A lower
 * distance means "more likely the same person"; a pair is called "same"
 * when distance <= threshold.
 */
#ifndef FV_CLI_METRICS_H
#define FV_CLI_METRICS_H

#include <stddef.h>

typedef struct fv_pair_score {
    double distance;
    int same;
} fv_pair_score;

/* Fraction of pairs classified correctly at threshold t. */
double fv_metric_accuracy(const fv_pair_score *p, size_t n, double t);

/* The threshold maximising accuracy (midpoint between neighbouring sorted
 * distances; ties broken towards the lower threshold) and that accuracy.
 * Sorts a private copy; returns -1 on allocation failure or n == 0. */
int fv_metric_best_threshold(const fv_pair_score *p, size_t n, double *t, double *acc);

/* Area under the ROC curve (probability that a random same pair is closer
 * than a random different pair, ties counted half).  NaN when one class is
 * empty or on allocation failure. */
double fv_metric_roc_auc(const fv_pair_score *p, size_t n);

/* True accept rate at the largest threshold whose false accept rate is at
 * most far.  Returns -1 when there are fewer than 1/far different pairs
 * (the rate cannot be measured) or on allocation failure; *thr receives the
 * threshold used. */
double fv_metric_tar_at_far(const fv_pair_score *p, size_t n, double far, double *thr);

typedef struct fv_dist_summary {
    size_t count;
    double min, p05, median, mean, p95, max;
} fv_dist_summary;

/* Summary of the distances of the pairs whose same == same_class. */
void fv_metric_summary(const fv_pair_score *p, size_t n, int same_class, fv_dist_summary *out);

#endif
