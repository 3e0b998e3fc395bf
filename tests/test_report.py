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


# ----------------------------------------------------------------------------- matched density


def test_interpolate_log_density_is_linear_in_log_density_and_never_extrapolates():
    d, v = [1.0, 0.1, 0.01], [0.9, 0.7, 0.1]
    assert report.interpolate_log_density(d, v, 0.1) == pytest.approx(0.7)  # a level itself
    assert report.interpolate_log_density(d, v, math.sqrt(0.1)) == pytest.approx(0.8)  # geometric midpoint
    assert report.interpolate_log_density(d[::-1], v[::-1], 0.01 ** 0.75 * 0.1 ** 0.25) == pytest.approx(0.25)
    assert report.interpolate_log_density(d, v, 0.009) is None and report.interpolate_log_density(d, v, 1.1) is None
    with pytest.raises(ValueError, match="one value per density"):
        report.interpolate_log_density([1.0, 0.5], [0.9], 0.7)
    with pytest.raises(ValueError, match="> 0"):
        report.interpolate_log_density([1.0, 0.0], [0.9, 0.1], 0.5)


def _lineage(points, offsets):
    """Rows of one lineage: ``points`` [(density, accuracy)] shifted by ``offsets[seed]``."""
    return [{"seed": s, "density": d, "test_accuracy": a + off} for s, off in enumerate(offsets) for d, a in points]


def test_matched_density_compares_at_equal_density_not_equal_iteration():
    # B loses accuracy faster per log-density than A but keeps more weights per iteration:
    # at every iteration B's accuracy is higher, at every matched density A's is.
    offsets = [0.0, 0.03, -0.02, 0.01]
    a = _lineage([(0.8 ** i, 0.98 - 0.02 * i) for i in range(8)], offsets)
    b = _lineage([(0.9 ** i, 0.98 - 0.015 * i) for i in range(8)], offsets)
    for i in range(1, 8):  # equal iterations: B ahead
        assert 0.98 - 0.015 * i > 0.98 - 0.02 * i
    m = report.matched_density(a, b)
    assert [x.density for x in m] == pytest.approx([0.8 ** i for i in range(4)])  # A's, within B's range (>= 0.478)
    for x in m[1:]:
        # B at A's density 0.8**i lies log(0.8**i)/log(0.9) iterations along B's line
        b_there = 0.98 - 0.015 * i_of(x.density, 0.9)
        assert x.b.mean == pytest.approx(b_there + np.mean(offsets))
        assert x.diff.mean > 0 and x.diff.ci95[0] > 0  # A ahead, every seed agrees
        assert x.diff.n == 4 and x.diff.std == pytest.approx(0.0, abs=1e-9)  # paired: the seed offsets cancel
    assert m[0].diff.mean == pytest.approx(0.0, abs=1e-12)


def i_of(density, rate):
    return math.log(density) / math.log(rate)


def test_matched_density_pairs_by_seed_and_skips_seeds_outside_their_range():
    a = _lineage([(1.0, 0.9), (0.5, 0.8), (0.25, 0.6)], [0.0, 0.1, 0.2])
    b = _lineage([(1.0, 0.9), (0.4, 0.7)], [0.0, 0.1])  # two seeds, stops at 40%
    b += [{"seed": 2, "density": 1.0, "test_accuracy": 0.95}, {"seed": 2, "density": 0.6, "test_accuracy": 0.9}]
    m = report.matched_density(a, b, [0.5, 0.25])
    assert m[0].a.n == 3 and m[0].b.n == 2 and m[0].diff.n == 2  # seed 2 of B ends at 60%
    want_b = 0.9 + (0.7 - 0.9) * math.log(0.5) / math.log(0.4)
    assert m[0].diff.mean == pytest.approx(0.8 - want_b)
    assert m[1].b is None and m[1].diff is None and m[1].a.n == 3  # 25% is outside every B curve
    assert report.matched_density(a, b, [0.5], value_key="missing")[0].a is None
