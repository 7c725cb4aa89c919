"""Agreement metrics against SciPy and the published formulas."""

import numpy as np
import pytest
import scipy.stats as st

import osteonet.metrics as M


def _pair(seed, n=80):
    rng = np.random.default_rng(seed)
    x = rng.normal(100, 15, n)
    y = 0.9 * x + 12 + rng.normal(0, 8, n)
    return x, y


@pytest.mark.parametrize("seed", range(5))
def test_pearson_spearman_linregress_match_scipy(seed):
    x, y = _pair(seed)
    if seed % 2:
        x, y = np.round(x, -1), np.round(y, -1)  # ties for Spearman
    p = M.pearson(x, y)
    r, pv = st.pearsonr(x, y)
    assert p["r"] == pytest.approx(r, abs=1e-12) and p["p_value"] == pytest.approx(pv, rel=1e-8)
    z, h = np.arctanh(r), st.norm.ppf(0.975) / np.sqrt(len(x) - 3)
    assert (p["ci_low"], p["ci_high"]) == pytest.approx((np.tanh(z - h), np.tanh(z + h)), rel=1e-10)
    s = M.spearman(x, y)
    rs, ps = st.spearmanr(x, y)
    assert s["r"] == pytest.approx(rs, abs=1e-12) and s["p_value"] == pytest.approx(ps, rel=1e-8)
    f = M.linear_fit(x, y)
    ref = st.linregress(x, y)
    for k, v in (("slope", ref.slope), ("intercept", ref.intercept), ("r", ref.rvalue), ("p_value", ref.pvalue),
                 ("slope_se", ref.stderr), ("intercept_se", ref.intercept_stderr)):
        assert f[k] == pytest.approx(v, rel=1e-9), k


@pytest.mark.parametrize("seed", range(3))
def test_errors_and_bland_altman(seed):
    x, y = _pair(seed, 50)
    assert M.mae(x, y) == pytest.approx(np.mean(np.abs(y - x)))
    assert M.rmse(x, y) == pytest.approx(np.sqrt(np.mean((y - x) ** 2)))
    b = M.bland_altman(x, y)
    d = y - x
    n, sd = len(d), d.std(ddof=1)
    z, t = st.norm.ppf(0.975), st.t.ppf(0.975, n - 1)
    assert b["bias"] == pytest.approx(d.mean()) and b["sd"] == pytest.approx(sd)
    assert b["loa_low"] == pytest.approx(d.mean() - z * sd) and b["loa_high"] == pytest.approx(d.mean() + z * sd)
    assert b["bias_ci"] == pytest.approx((d.mean() - t * sd / np.sqrt(n), d.mean() + t * sd / np.sqrt(n)), rel=1e-8)
    se = sd * np.sqrt(1 / n + z ** 2 / (2 * (n - 1)))
    assert b["loa_high_ci"] == pytest.approx((d.mean() + z * sd - t * se, d.mean() + z * sd + t * se), rel=1e-8)


def test_distribution_helpers_match_scipy():
    core = M._m
    for p in (1e-10, 0.001, 0.025, 0.3, 0.5, 0.975, 0.999999):
        assert core.norm_ppf(p) == pytest.approx(st.norm.ppf(p), rel=1e-13)
    for df in (1, 2, 5, 29, 300):
        # SciPy's t.isf is good to ~1e-9 here (e.g. df=5); ours is checked by round trip through t.sf to 1e-14.
        assert core.t_isf(0.025, df) == pytest.approx(st.t.isf(0.025, df), rel=1e-8)
        assert st.t.sf(core.t_isf(0.025, df), df) == pytest.approx(0.025, rel=1e-13)
        assert core.chi2_sf(3.7, df) == pytest.approx(st.chi2.sf(3.7, df), rel=1e-10)


@pytest.mark.parametrize("call", [
    lambda: M.pearson([1, 2, 3], [1, 2]),
    lambda: M.pearson([1, 1, 1], [1, 2, 3]),
    lambda: M.pearson([1, 2, np.nan], [1, 2, 3]),
    lambda: M.mae([], []),
    lambda: M.bland_altman([1.0], [2.0]),
])
def test_bad_input(call):
    with pytest.raises(ValueError) as e:
        call()
    assert "\n" not in str(e.value)
