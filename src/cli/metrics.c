/*
 * metrics.c: accuracy, best threshold, ROC AUC, TAR@FAR and summaries over
 * scored pairs (see metrics.h).  O(n log n): everything works on one sorted
 * copy of the distances.
 */
#include "cli/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_dist(const void *a, const void *b) {
    double x = ((const fv_pair_score *)a)->distance, y = ((const fv_pair_score *)b)->distance;
    return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static fv_pair_score *sorted_copy(const fv_pair_score *p, size_t n) {
    if (n == 0 || n > ((size_t)-1) / sizeof *p) return NULL;
    fv_pair_score *s = malloc(n * sizeof *s);
    if (!s) return NULL;
    memcpy(s, p, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_dist);
    return s;
}

/* Counts the same (*gp) and different (*gn) pairs tied with s[i] in the
 * sorted array; returns the index just past the tie group. */
static size_t tie_group(const fv_pair_score *s, size_t n, size_t i, size_t *gp, size_t *gn) {
    size_t j = i;
    *gp = *gn = 0;
    while (j < n && s[j].distance == s[i].distance) {
        if (s[j].same)
            (*gp)++;
        else
            (*gn)++;
        j++;
    }
    return j;
}

double cli_metric_accuracy(const fv_pair_score *p, size_t n, double t) {
    if (n == 0) return NAN;
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) ok += (p[i].distance <= t) == (p[i].same != 0);
    return (double)ok / (double)n;
}

int cli_metric_best_threshold(const fv_pair_score *p, size_t n, double *t, double *acc) {
    fv_pair_score *s = sorted_copy(p, n);
    if (!s) return -1;
    size_t neg = 0;
    for (size_t i = 0; i < n; i++) neg += !s[i].same;
    /* threshold below everything: all called different */
    size_t best_ok = neg, ok = neg;
    double best_t = s[0].distance - 1e-6;
    for (size_t i = 0; i < n; i++) {
        if (s[i].same)
            ok++; /* pair i moves to "same" */
        else
            ok--;
        if (i + 1 < n && s[i + 1].distance == s[i].distance) continue;
        if (ok > best_ok) {
            best_ok = ok;
            best_t = i + 1 < n ? 0.5 * (s[i].distance + s[i + 1].distance) : s[i].distance;
        }
    }
    *t = best_t;
    *acc = (double)best_ok / (double)n;
    free(s);
    return 0;
}

double cli_metric_roc_auc(const fv_pair_score *p, size_t n) {
    fv_pair_score *s = sorted_copy(p, n);
    if (!s) return NAN;
    /* Mann-Whitney with tie groups: for each same pair count the different
     * pairs strictly farther plus half of those tied. */
    size_t pos = 0, neg = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].same)
            pos++;
        else
            neg++;
    }
    if (!pos || !neg) {
        free(s);
        return NAN;
    }
    double wins = 0;
    size_t neg_before = 0;
    for (size_t i = 0; i < n;) {
        size_t gp, gn, j = tie_group(s, n, i, &gp, &gn);
        wins += (double)gp * ((double)(neg - neg_before - gn) + 0.5 * (double)gn);
        neg_before += gn;
        i = j;
    }
    free(s);
    return wins / ((double)pos * (double)neg);
}

double cli_metric_tar_at_far(const fv_pair_score *p, size_t n, double far, double *thr) {
    size_t pos = 0, neg = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i].same)
            pos++;
        else
            neg++;
    }
    if (far <= 0 || !pos || (double)neg < 1.0 / far - 1e-9) return -1;
    fv_pair_score *s = sorted_copy(p, n);
    if (!s) return -1;
    size_t allowed = (size_t)floor(far * (double)neg + 1e-9);
    size_t fa = 0, ta = 0, best_ta = 0;
    double best_thr = s[0].distance - 1e-6;
    for (size_t i = 0; i < n;) {
        size_t gp, gn, j = tie_group(s, n, i, &gp, &gn);
        if (fa + gn > allowed) break;
        fa += gn;
        ta += gp;
        best_ta = ta;
        best_thr = s[i].distance;
        i = j;
    }
    free(s);
    if (thr) *thr = best_thr;
    return (double)best_ta / (double)pos;
}

int cli_metric_folds(const fv_pair_score *p, size_t n, int nfolds, double *acc, double *thr) {
    if (nfolds < 2 || n == 0) return -1;
    for (size_t i = 0; i < n; i++)
        if (p[i].fold < 0 || p[i].fold >= nfolds) return -1;
    fv_pair_score *train = malloc(n * sizeof *train);
    if (!train) return -1;
    int rc = 0;
    for (int k = 0; k < nfolds && rc == 0; k++) {
        size_t nt = 0, total = 0, ok = 0;
        for (size_t i = 0; i < n; i++)
            if (p[i].fold != k && !p[i].failed) train[nt++] = p[i];
        double t, train_acc;
        if (nt == 0 || cli_metric_best_threshold(train, nt, &t, &train_acc)) {
            rc = -1;
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (p[i].fold != k) continue;
            total++;
            ok += !p[i].failed && (p[i].distance <= t) == (p[i].same != 0);
        }
        if (total == 0) rc = -1;
        acc[k] = total ? (double)ok / (double)total : NAN;
        thr[k] = t;
    }
    free(train);
    return rc;
}

void cli_metric_mean_std(const double *v, size_t n, double *mean, double *std) {
    double s = 0, ss = 0;
    for (size_t i = 0; i < n; i++) s += v[i];
    *mean = n ? s / (double)n : NAN;
    for (size_t i = 0; i < n; i++) ss += (v[i] - *mean) * (v[i] - *mean);
    *std = n > 1 ? sqrt(ss / (double)(n - 1)) : 0.0;
}

void cli_metric_summary(const fv_pair_score *p, size_t n, int same_class, fv_dist_summary *out) {
    memset(out, 0, sizeof *out);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += (p[i].same != 0) == (same_class != 0);
    if (k == 0) return;
    double *d = malloc(k * sizeof *d);
    if (!d) return;
    size_t j = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        if ((p[i].same != 0) == (same_class != 0)) {
            d[j++] = p[i].distance;
            sum += p[i].distance;
        }
    qsort(d, k, sizeof *d, cmp_double);
    out->count = k;
    out->min = d[0];
    out->max = d[k - 1];
    out->mean = sum / (double)k;
    out->median = k % 2 ? d[k / 2] : 0.5 * (d[k / 2 - 1] + d[k / 2]);
    out->p05 = d[(size_t)floor(0.05 * (double)(k - 1))];
    out->p95 = d[(size_t)ceil(0.95 * (double)(k - 1))];
    free(d);
}
