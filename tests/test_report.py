"""Multi-seed summaries: seed_stats and the paired comparison built on it."""

import math

import numpy as np
import pytest

from jaxticket import report


def test_seed_stats_matches_the_t_interval_by_hand():
    x = [0.97, 0.98, 0.985, 0.975]
    s = report.seed_stats(x)
    mean, std = np.mean(x), np.std(x, ddof=1)
    half = 3.182446305284263 * std / math.sqrt(4)  # t_{0.975, 3}
    assert s.n == 4 and s.mean == pytest.approx(mean) and s.std == pytest.approx(std)
    assert s.ci95 == pytest.approx((mean - half, mean + half))


def test_seed_stats_drops_missing_values_and_handles_one_and_none():
    assert report.seed_stats([None, float("nan")]) is None
    one = report.seed_stats([0.5, None])
    assert one.n == 1 and one.std == 0.0 and one.ci95 == (0.5, 0.5)


def test_paired_stats_pairs_by_seed_and_removes_the_seed_variation():
    # seeds differ a lot from each other; b is a shifted by 0.01 +- a little on every seed
    a = {0: 0.90, 1: 0.95, 2: 0.99, 3: 0.93}
    b = {0: 0.889, 1: 0.941, 2: 0.979, 3: 0.921}
    d = report.paired_stats(a, b)
    assert d.n == 4 and d.mean == pytest.approx(0.01, abs=1e-9)
    assert d.ci95[0] > 0  # every seed agrees: the paired interval excludes 0
    unpaired = (report.seed_stats(list(a.values())).ci95, report.seed_stats(list(b.values())).ci95)
    assert unpaired[0][0] < unpaired[1][1]  # while the two unpaired intervals overlap
    # the order of the arguments is the sign of the difference
    assert report.paired_stats(b, a).mean == pytest.approx(-d.mean)


def test_paired_stats_uses_only_seeds_both_sides_hold():
    d = report.paired_stats({0: 1.0, 1: 2.0, 2: None, 5: 9.0}, {0: 0.5, 1: 1.0, 2: 3.0, 3: 4.0})
    assert d.n == 2 and d.mean == pytest.approx(0.75)
    assert report.paired_stats({0: 1.0}, {1: 1.0}) is None
