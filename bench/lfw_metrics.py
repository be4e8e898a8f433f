"""The LFW View 2 fold protocol in Python, for tools that are not ours.

Same rules as src/cli/metrics.c: the best threshold is the first cut of
highest accuracy over the sorted distances, at the midpoint between
neighbours; each fold is scored at the best threshold of the others, and a
failed pair (no distance) counts as an error in its fold and is left out
of training.
"""


def best_threshold(scored):
    """scored: [(distance, same)].  Returns (threshold, accuracy)."""
    s = sorted(scored)
    n = len(s)
    ok = sum(1 for _, same in s if not same)
    best_ok, best_t = ok, s[0][0] - 1e-6
    for i, (d, same) in enumerate(s):
        ok += 1 if same else -1
        if i + 1 < n and s[i + 1][0] == d:
            continue
        if ok > best_ok:
            best_ok = ok
            best_t = 0.5 * (d + s[i + 1][0]) if i + 1 < n else d
    return best_t, best_ok / n


def roc_auc(scored):
    """Probability that a same pair is closer than a different one (ties half)."""
    pos = [d for d, s in scored if s]
    neg = sorted(d for d, s in scored if not s)
    if not pos or not neg:
        return None
    import bisect
    wins = 0.0
    for d in pos:
        lo, hi = bisect.bisect_left(neg, d), bisect.bisect_right(neg, d)
        wins += (len(neg) - hi) + 0.5 * (hi - lo)
    return wins / (len(pos) * len(neg))


def fold_protocol(rows, nfolds):
    """rows: [(distance, same, fold, failed)].  Returns (accuracies, thresholds)."""
    accs, thrs = [], []
    for k in range(nfolds):
        train = [(d, s) for d, s, f, bad in rows if f != k and not bad]
        t, _ = best_threshold(train)
        test = [(d, s, bad) for d, s, f, bad in rows if f == k]
        ok = sum(1 for d, s, bad in test if not bad and (d <= t) == bool(s))
        accs.append(ok / len(test))
        thrs.append(t)
    return accs, thrs
