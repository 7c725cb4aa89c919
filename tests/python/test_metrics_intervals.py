"""Intervals and tests against statsmodels / SciPy and independent O(mn) DeLong."""

import numpy as np
import pytest
import scipy.stats as st
from sklearn import metrics as sk
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint

import osteonet.metrics as M


@pytest.mark.parametrize("method,sm", [("wilson", "wilson"), ("clopper-pearson", "beta")])
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.01])
def test_proportion_ci_equals_statsmodels(method, sm, alpha):
    rng = np.random.default_rng(7)
    cases = [(0, 10), (10, 10), (1, 1), (3, 7)] + [(int(k), int(n)) for n in rng.integers(1, 5000, 20)
                                                    for k in [rng.integers(0, n + 1)]]
    for k, n in cases:
        ours = M.proportion_ci(k, n, method=method, alpha=alpha)
        ref = proportion_confint(k, n, alpha=alpha, method=sm)
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12, err_msg=f"{k}/{n}")


def _delong_reference(y, scores):
    """Structural components V10, V01 by direct O(mn) comparison (DeLong et al. 1988)."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = lambda a, b: (a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])
    v10 = np.stack([psi(p, q).mean(1) for p, q in zip(pos, neg)])
    v01 = np.stack([psi(p, q).mean(0) for p, q in zip(pos, neg)])
    auc = v10.mean(1)
    s = np.atleast_2d(np.cov(v10)) / pos.shape[1] + np.atleast_2d(np.cov(v01)) / neg.shape[1]
    return auc, s


@pytest.mark.parametrize("seed", range(5))
def test_delong_matches_direct_computation(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 150)
    a = np.round(rng.random(150) + 0.5 * y, 1)  # ties
    b = a + rng.normal(scale=0.4, size=150)
    auc, s = _delong_reference(y, np.stack([a, b]))
    ci = M.delong_ci(y, a)
    assert ci["auc"] == pytest.approx(sk.roc_auc_score(y, a), abs=1e-12)
    assert ci["variance"] == pytest.approx(s[0, 0], rel=1e-10)
    half = st.norm.ppf(0.975) * np.sqrt(s[0, 0])
    assert ci["ci_low"] == pytest.approx(max(0, auc[0] - half), rel=1e-9)
    t = M.delong_test(y, a, b)
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    z = (auc[0] - auc[1]) / np.sqrt(var)
    assert t["z"] == pytest.approx(z, rel=1e-9)
    assert t["p_value"] == pytest.approx(2 * st.norm.sf(abs(z)), rel=1e-9)


def test_bootstrap_builtin_equals_callable_on_same_resamples():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = rng.random(300) + 0.3 * y
    p = (s > 0.6).astype(int)
    fast = M.bootstrap_ci("auc", y, s, n_resamples=200, seed=11)
    slow = M.bootstrap_ci(sk.roc_auc_score, y, s, n_resamples=200, seed=11)
    np.testing.assert_allclose(fast["samples"], slow["samples"], atol=1e-12)
    assert fast["ci_low"] == pytest.approx(slow["ci_low"]) and fast["ci_high"] == pytest.approx(slow["ci_high"])
    for name, fn in (("f1", sk.f1_score), ("accuracy", sk.accuracy_score), ("recall", sk.recall_score)):
        a = M.bootstrap_ci(name, y, p, n_resamples=100, seed=5)
        b = M.bootstrap_ci(lambda t, q: fn(t, q), y, p, n_resamples=100, seed=5)
        np.testing.assert_allclose(a["samples"], b["samples"], atol=1e-12)
    x = rng.normal(size=300)
    z = x + rng.normal(size=300)
    a = M.bootstrap_ci("pearson", x, z, n_resamples=100, seed=2)
    b = M.bootstrap_ci(lambda u, v: st.pearsonr(u, v)[0], x, z, n_resamples=100, seed=2)
    np.testing.assert_allclose(a["samples"], b["samples"], atol=1e-12)


def test_bootstrap_is_seeded():
    idx1, idx2, idx3 = M.bootstrap_indices(50, 10, 1), M.bootstrap_indices(50, 10, 1), M.bootstrap_indices(50, 10, 2)
    np.testing.assert_array_equal(idx1, idx2)
    assert not np.array_equal(idx1, idx3)
    assert idx1.min() >= 0 and idx1.max() < 50


@pytest.mark.parametrize("b,c", [(0, 0), (3, 9), (10, 12), (40, 22), (0, 7)])
def test_mcnemar_equals_statsmodels(b, c):
    table = np.array([[30, b], [c, 25]])
    for exact in (True, False):
        ref = sm_mcnemar(table, exact=exact, correction=True)
        ours = M.mcnemar(table, exact=exact)
        if b + c == 0 and not exact:
            assert np.isnan(ours["p_value"])
            continue
        assert ours["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
        assert ours["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_chi2_contingency_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    shape = [(2, 2), (2, 3), (3, 4)][seed % 3]
    table = rng.integers(1, 60, size=shape)
    for corr in (True, False):
        stat, p, dof, _ = st.chi2_contingency(table, correction=corr)
        ours = M.chi2_contingency(table, correction=corr)
        assert ours["statistic"] == pytest.approx(stat, rel=1e-10)
        assert ours["p_value"] == pytest.approx(p, rel=1e-8)
        assert ours["dof"] == dof


def test_compare_readers():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    a = np.where(rng.random(120) < 0.8, y, (y + 1) % 3)
    b = np.where(rng.random(120) < 0.6, y, (y + 2) % 3)
    r = M.compare_readers(y, a, b)
    ca, cb = a == y, b == y
    ref = sm_mcnemar([[np.sum(ca & cb), np.sum(ca & ~cb)], [np.sum(~ca & cb), np.sum(~ca & ~cb)]], exact=True)
    assert r["mcnemar"]["p_value"] == pytest.approx(ref.pvalue)
    assert r["accuracy_a"] == pytest.approx(ca.mean())


@pytest.mark.parametrize("call", [
    lambda: M.proportion_ci(5, 3),
    lambda: M.proportion_ci(1, 3, method="agresti"),
    lambda: M.proportion_ci(1, 3, alpha=1.5),
    lambda: M.delong_ci([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4]),
    lambda: M.bootstrap_ci("aucc", [0, 1], [0.1, 0.2]),
    lambda: M.chi2_contingency([[0, 0], [1, 2]]),
])
def test_bad_input(call):
    with pytest.raises(ValueError) as e:
        call()
    assert "\n" not in str(e.value)


def test_wilson_interval_stays_inside_0_1_at_the_ends():
    # 54 of 54: rounding put the upper end at 1.0000000000000002 (found by the long Hypothesis run)
    lo, hi = M.proportion_ci(54, 54)
    assert hi == 1.0 and 0 < lo < 1
    lo, hi = M.proportion_ci(0, 54)
    assert lo == 0.0 and 0 < hi < 1
