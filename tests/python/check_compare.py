#!/usr/bin/env python3
"""Checks `tmca compare --format json` against numpy and scipy.

Usage: check_compare.py A.csv B.csv RESULT.json [METRIC]   (run by tests/cli_compare.rs)

METRIC is the compared column (default dice); for the distances hd95 and assd lower is
better, so "better" counts the negative differences.

Per dataset (and over all images when there are several): the image count, the means of A and
B and of B - A (numpy), the better/equal/worse counts, the Wilcoxon signed-rank p-value of
scipy.stats.wilcoxon on the non-zero differences (method "exact" when tmca says so, which must
be exactly when there are at most 50 of them and no ties; else "asymptotic"; no continuity
correction; relative 1e-9), and a bootstrap interval that holds the mean difference and is
within 25% of the normal-theory width.
"""

import csv
import json
import math
import sys

import numpy as np
from scipy.stats import wilcoxon


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def close(a, b, rel=1e-9, abs_=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def load(path, metric):
    with open(path, newline="") as f:
        return {(r["dataset"], int(r["index"])): float(r[metric]) for r in csv.DictReader(f)}


def main(a_path, b_path, result_path, metric="dice"):
    a, b = load(a_path, metric), load(b_path, metric)
    lower_is_better = metric in ("hd95", "assd")
    rows = json.load(open(result_path))
    datasets = list(dict.fromkeys(k[0] for k in a))
    groups = {d: sorted(k for k in a if k[0] == d) for d in datasets}
    if len(datasets) > 1:
        groups["all images"] = [k for d in datasets for k in groups[d]]
    if [r["dataset"] for r in rows] != list(groups):
        fail("datasets %r, expected %r" % ([r["dataset"] for r in rows], list(groups)))
    for r in rows:
        keys = groups[r["dataset"]]
        x = np.array([a[k] for k in keys])
        y = np.array([b[k] for k in keys])
        d = y - x
        name = r["dataset"]
        if r["images"] != len(keys):
            fail("%s: %d images, expected %d" % (name, r["images"], len(keys)))
        for field, want in [("mean_a", x.mean()), ("mean_b", y.mean()), ("mean_diff", d.mean())]:
            if not close(r[field], want):
                fail("%s: %s %r, numpy %r" % (name, field, r[field], want))
        better, worse = ((d < 0), (d > 0)) if lower_is_better else ((d > 0), (d < 0))
        counts = (int(better.sum()), int((d == 0).sum()), int(worse.sum()))
        if (r["b_better"], r["equal"], r["b_worse"]) != counts:
            fail("%s: better/equal/worse %r, expected %r" % (name, (r["b_better"], r["equal"], r["b_worse"]), counts))
        nz = d[d != 0]
        w = r["wilcoxon"]
        if len(nz) == 0:
            if w is not None:
                fail("%s: a test of no differences" % name)
            continue
        ties = len(np.unique(np.abs(nz))) < len(nz)
        exact = len(nz) <= 50 and not ties
        if w["exact"] != exact or w["n"] != len(nz):
            fail("%s: exact=%r n=%r, expected exact=%r n=%r" % (name, w["exact"], w["n"], exact, len(nz)))
        ref = wilcoxon(nz, method="exact" if exact else "asymptotic", correction=False)
        if not close(w["p_value"], float(ref.pvalue)):
            fail("%s: p %r, scipy %r" % (name, w["p_value"], float(ref.pvalue)))
        if not close(min(w["rank_sum_plus"], w["rank_sum_minus"]), float(ref.statistic)):
            fail("%s: statistic %r, scipy %r" % (name, min(w["rank_sum_plus"], w["rank_sum_minus"]), float(ref.statistic)))
        lo, hi = r["ci_low"], r["ci_high"]
        if not lo <= d.mean() <= hi:
            fail("%s: interval [%r, %r] misses the mean %r" % (name, lo, hi, d.mean()))
        width = 2 * 1.96 * d.std() / math.sqrt(len(d))
        if not 0.75 * width <= hi - lo <= 1.25 * width:
            fail("%s: interval width %r, normal theory %r" % (name, hi - lo, width))
        print("%-12s n=%3d p=%.6g (%s) CI [%.4f, %.4f]" % (name, len(nz), w["p_value"], "exact" if exact else "asymptotic", lo, hi))
    print("compare OK")


if __name__ == "__main__":
    main(*sys.argv[1:5])
