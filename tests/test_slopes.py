"""Property tests (hypothesis) for `loss_lin_slope.slopes`: the log-log fit equals numpy.polyfit and statsmodels OLS,
the streaming fit equals the batch functions under any chunking (burn-in index included) and resumes bit for bit from
its state dict, the smoother equals pandas' rolling mean, the cumulative learning rate equals the summed schedule, and
no public function raises on any dirty input. The example-based tests live in nbs/03_slopes.ipynb."""

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from loss_lin_slope.forms import (
    CURVE_FORMS,
    compare_curve_forms,
    cumulative_lr,
    fit_summary,
    holdout_error,
    schedule_lr,
)
from loss_lin_slope.slopes import (
    FitResult,
    StreamingLogLogFit,
    burn_in_index,
    burn_in_loss,
    full_slope,
    knee_fit,
    loglog_fit,
    smoothed_loss,
    window_slope,
)

NAN, INF = float("nan"), float("inf")
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

positive = st.floats(1e-3, 1e4, allow_nan=False, allow_infinity=False)
# values on a coarse grid (as logged losses and epochs are): no pathological spreads of a few ulps
grid_x = st.integers(1, 2000).map(lambda k: k / 40)
grid_y = st.integers(1, 500).map(lambda k: k / 100)
dirty_value = st.sampled_from([NAN, INF, -INF, 0.0, -1.0])


def _close(a: float, b: float, tol: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ---- loglog_fit vs numpy.polyfit and statsmodels OLS -------------------------------------------------------------
@st.composite
def clean_xy(draw):
    n = draw(st.integers(3, 60))
    x = np.array(draw(st.lists(positive, min_size=n, max_size=n)))
    y = np.array(draw(st.lists(st.floats(1e-6, 1e6), min_size=n, max_size=n)))
    return x, y


@PROPS
@given(clean_xy(), st.sampled_from([0.9, 0.95, 0.99]))
def test_loglog_fit_equals_polyfit_and_statsmodels(xy, conf):
    x, y = xy
    u, v = np.log(x), np.log(y)
    # the references themselves lose ~all digits when the logs barely vary relative to their size
    assume(np.ptp(u) > 1e-3 * (1 + np.abs(u).max()))
    assume(np.ptp(v) == 0 or np.ptp(v) > 1e-6 * (1 + np.abs(v).max()))
    f = loglog_fit(x, y, conf=conf)
    assert (f.n, f.n_dropped) == (x.size, 0)
    du, dv = u - u.mean(), v - v.mean()
    suu, svv = float(du @ du), float(dv @ dv)
    if np.ptp(v) == 0:  # constant y: slope exactly 0, R² undefined
        assert f.slope == 0.0 and math.isnan(f.r2) and "constant y" in f.reason
        return
    sm_fit = sm.OLS(v, sm.add_constant(u)).fit()
    b0, b1 = sm_fit.params
    p1, p0 = np.polyfit(u, v, 1)
    slope_scale = math.sqrt(svv / suu)
    int_scale = abs(v.mean()) + abs(u.mean()) * slope_scale
    for ref_slope, ref_int in [(b1, b0), (p1, p0)]:
        assert _close(f.slope, ref_slope, 1e-9 * (abs(ref_slope) + slope_scale)), (f.slope, ref_slope)
        assert _close(f.intercept, ref_int, 1e-9 * (abs(ref_int) + int_scale)), (f.intercept, ref_int)
    assert _close(f.r2, sm_fit.rsquared, 1e-9), (f.r2, sm_fit.rsquared)
    # standard errors come from SSR, which both compute to ~1e-15·S_vv absolute: compare the variances
    dof = x.size - 2
    floor = 1e-12 * svv / (dof * suu)
    for got, ref in [(f.stderr, sm_fit.bse[1]), (f.intercept_stderr, sm_fit.bse[0])]:
        assert abs(got**2 - ref**2) <= 1e-9 * ref**2 + floor * (1 + u.mean() ** 2 * dof), (got, ref)
    lo, hi = sm_fit.conf_int(alpha=1 - conf)[1]
    half = (hi - lo) / 2
    assert _close(f.ci_high - f.slope, half, 1e-9 * half + 10 * math.sqrt(floor)), (f.ci_high - f.slope, half)
    assert _close(f.ci_low, lo, 1e-9 * (abs(lo) + slope_scale) + 10 * math.sqrt(floor))


# ---- streaming == batch ------------------------------------------------------------------------------------------
@st.composite
def stream_case(draw):
    n = draw(st.integers(0, 400))
    x = draw(st.lists(st.one_of(grid_x, grid_x, grid_x, dirty_value), min_size=n, max_size=n))
    y = draw(st.lists(st.one_of(grid_y, grid_y, grid_y, dirty_value), min_size=n, max_size=n))
    mode = draw(st.sampled_from(["plain", "window", "burn_in", "burn_in_window"]))
    kw = {}
    if "window" in mode:
        lo = draw(st.sampled_from([None, 0.5, 5.0, 20.0]))
        hi = draw(st.sampled_from([None, 15.0, 40.0]))
        kw.update(x_min=lo, x_max=hi)
    if "burn_in" in mode:
        kw.update(burn_in_threshold=draw(st.sampled_from([0.5, 1.0, 2.5])), smooth=draw(st.integers(1, 60)))
    kw["nonpositive"] = draw(st.sampled_from(["drop", "drop", "nan"]))
    chunks = draw(st.lists(st.one_of(st.just(0), st.integers(1, 120)), min_size=1, max_size=40))  # 0: a scalar update
    return np.array(x, dtype=float), np.array(y, dtype=float), kw, chunks


def _feed(sf, x, y, chunks):
    i = k = 0
    while i < x.size:
        c = chunks[k % len(chunks)]
        k += 1
        if c == 0:
            sf.update(x[i], y[i])
            i += 1
        else:
            sf.update(x[i : i + c], y[i : i + c])
            i += c
    return sf


def _batch(x, y, kw) -> FitResult:
    np_ = kw.get("nonpositive", "drop")
    if "burn_in_threshold" in kw:
        return full_slope(x, y, kw["burn_in_threshold"], kw["smooth"], start=kw.get("x_min"), end=kw.get("x_max"),
                          nonpositive=np_)
    if "x_min" in kw or "x_max" in kw:
        return window_slope(x, y, kw.get("x_min"), kw.get("x_max"), nonpositive=np_)
    return loglog_fit(x, y, nonpositive=np_)


def _used(x, y, kw):
    "The points the batch fit uses (to size the tolerances)."
    start = 0
    if "burn_in_threshold" in kw:
        start = burn_in_index(y, kw["burn_in_threshold"], kw["smooth"])
        start = x.size if start is None else start
    lo = -INF if kw.get("x_min") is None else kw["x_min"]
    hi = INF if kw.get("x_max") is None else kw["x_max"]
    with np.errstate(invalid="ignore"):
        m = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0) & (x >= lo) & (x <= hi)
    m[:start] = False
    return np.log(x[m]), np.log(y[m])


def assert_same_fit(a: FitResult, b: FitResult, u: np.ndarray, v: np.ndarray):
    assert (a.n, a.n_dropped, a.reason) == (b.n, b.n_dropped, b.reason), (a, b)
    assert (a.x_min, a.x_max) == (b.x_min, b.x_max) or (math.isnan(a.x_min) and math.isnan(b.x_min))
    if not b.ok:
        assert not a.ok
        return
    du, dv = u - u.mean(), v - v.mean()
    suu, svv = float(du @ du), float(dv @ dv)
    scale = math.sqrt(svv / suu) if svv > 0 else 1.0
    assert _close(a.slope, b.slope, 1e-9 * (abs(b.slope) + scale))
    assert _close(a.intercept, b.intercept, 1e-9 * (abs(b.intercept) + abs(u.mean()) * scale + abs(v.mean())))
    assert _close(a.r2, b.r2, 1e-9)
    if b.n > 2:
        # streaming gets SSR as S_vv - S_uv²/S_uu: equal to 1e-9 unless the fit is near perfect (documented)
        floor = 1e-12 * svv / ((b.n - 2) * suu)
        assert abs(a.stderr**2 - b.stderr**2) <= 1e-9 * b.stderr**2 + floor, (a.stderr, b.stderr)
        assert _close(a.ci_low, b.ci_low, 1e-9 * (abs(b.ci_low) + scale) + 20 * math.sqrt(floor))


@PROPS
@given(stream_case())
def test_streaming_equals_batch(case):
    x, y, kw, chunks = case
    sf = _feed(StreamingLogLogFit(**kw), x, y, chunks)
    assert sf.n_seen == x.size
    assert_same_fit(sf.result(), _batch(x, y, kw), *_used(x, y, kw))
    if "burn_in_threshold" in kw:
        i = burn_in_index(y, kw["burn_in_threshold"], kw["smooth"])
        assert sf.burn_in_index == i
        assert sf.burn_in_loss == burn_in_loss(y, kw["burn_in_threshold"], kw["smooth"]) or i is None


@PROPS
@given(stream_case(), st.floats(0, 1))
def test_state_dict_resume_is_exact(case, where):
    x, y, kw, chunks = case
    cut = int(where * x.size)
    whole = _feed(StreamingLogLogFit(**kw), x, y, chunks)
    first = _feed(StreamingLogLogFit(**kw), x[:cut], y[:cut], chunks)
    blob = json.dumps(first.state_dict())
    second = _feed(StreamingLogLogFit.from_state_dict(json.loads(blob)), x[cut:], y[cut:], chunks[::-1])
    # same points, same order, other chunking after the cut: equal to 1e-9, and bit-identical when chunked alike
    assert_same_fit(second.result(), whole.result(), *_used(x, y, kw))
    again = _feed(StreamingLogLogFit(**kw), x[:cut], y[:cut], chunks)
    again = StreamingLogLogFit().load_state_dict(json.loads(json.dumps(again.state_dict())))
    again = _feed(again, x[cut:], y[cut:], chunks)
    direct = _feed(_feed(StreamingLogLogFit(**kw), x[:cut], y[:cut], chunks), x[cut:], y[cut:], chunks)
    assert json.dumps(again.state_dict()) == json.dumps(direct.state_dict())


# ---- smoother, schedule ------------------------------------------------------------------------------------------
@PROPS
@given(st.lists(st.one_of(grid_y, st.just(NAN)), max_size=300), st.integers(1, 80))
def test_smoothed_loss_equals_pandas_rolling_mean(values, w):
    y = np.array(values, dtype=float)
    fin = np.isfinite(y)
    got = smoothed_loss(y, w)
    ref = pd.Series(y[fin]).rolling(w, min_periods=1).mean().to_numpy()
    np.testing.assert_allclose(got[fin], ref, rtol=1e-9, atol=1e-12)
    assert np.isnan(got[~fin]).all()
    i = burn_in_index(y, 1.0, w)
    first = np.flatnonzero(fin)[np.flatnonzero(ref <= 1.0)]
    assert i == (int(first[0]) if first.size else None) or abs(ref[np.flatnonzero(fin) == i] - 1.0).min() < 1e-12


@PROPS
@given(st.integers(0, 300), st.integers(1, 3000), st.floats(1e-4, 1.0), st.floats(0, 1), st.floats(0, 0.5))
def test_cumulative_lr_is_the_summed_schedule(warmup, extra, lr, eta_frac, f0):
    total = warmup + extra
    steps = np.arange(1, total + 1)
    lrs = schedule_lr(steps, lr, warmup, total, eta_min=eta_frac * lr, start_factor=f0)
    assert np.all(lrs >= min(eta_frac, f0) * lr - 1e-15) and np.all(lrs <= lr * (1 + 1e-12))
    S = cumulative_lr(base_lr=lr, warmup_steps=warmup, total_steps=total, eta_min=eta_frac * lr, start_factor=f0)
    np.testing.assert_allclose(S, np.cumsum(lrs), rtol=1e-12)
    np.testing.assert_allclose(cumulative_lr(lrs), S, rtol=1e-12)
    every = steps[::7]
    np.testing.assert_allclose(cumulative_lr(lrs[every - 1], steps=every),
                               np.cumsum(lrs[every - 1] * np.diff(every, prepend=0)), rtol=1e-12)


# ---- knee scan and curve forms against brute force / references ---------------------------------------------------
@PROPS
@given(st.lists(st.tuples(grid_x, grid_y), min_size=12, max_size=80), st.integers(2, 6))
def test_knee_scan_finds_the_least_squares_breakpoint(pairs, min_points):
    x = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    k = knee_fit(x, y, min_points=min_points, min_frac=0.0)
    o = np.argsort(x, kind="stable")
    u, v = np.log(x[o]), np.log(y[o])
    n = u.size

    def ssr(t):
        X = np.column_stack([np.ones(n), u, np.maximum(u - t, 0.0)])
        r = v - X @ np.linalg.lstsq(X, v, rcond=None)[0]
        return float(r @ r)

    cand = [u[j] for j in range(min_points - 1, n - min_points) if np.ptp(u[j + 1 :]) > 0 and u[j] < u[-1]]
    sst = float(((v - v.mean()) ** 2).sum())
    if not k.reason:
        assert cand and ssr(math.log(k.epoch)) <= min(ssr(t) for t in cand) + 1e-9 * (sst + 1e-300)
    else:
        assert "fewer than" in k.reason or "no admissible" in k.reason or "constant x" in k.reason


@PROPS
@given(clean_xy())
def test_closed_form_curve_forms_equal_ols(xy):
    x, y = xy
    u, v = np.log(x), np.log(y)
    assume(np.ptp(u) > 1e-3 * (1 + np.abs(u).max()) and np.ptp(x) > 1e-3 * np.abs(x).max())
    assume(np.ptp(v) > 1e-6 * (1 + np.abs(v).max()))
    df = compare_curve_forms(x, y, forms=["power_law", "exponential"])
    if x.size < 4:  # k + 2 points needed for a comparison
        assert df["reason"].str.startswith("needs at least 4").all() and df.attrs["best"] is None
        return
    f = loglog_fit(x, y)
    assert _close(df.loc["power_law", "r2"], f.r2, 1e-9)
    assert _close(df.loc["power_law", "params"]["b"], -f.slope, 1e-9 * (abs(f.slope) + np.ptp(v) / np.ptp(u)))
    ref = sm.OLS(v, sm.add_constant(x)).fit()
    assert _close(df.loc["exponential", "r2"], ref.rsquared, 1e-9)
    assert _close(df.loc["exponential", "params"]["lam"], -ref.params[1], 1e-9 * (abs(ref.params[1]) + np.ptp(v) / np.ptp(x)))
    n, sse = x.size, df.loc["power_law", "sse"]
    if sse > 1e-12:  # (exact fits are floored at floating-point resolution)
        assert _close(df.loc["power_law", "aic"], n * math.log(sse / n) + 6, 1e-9 * n)


# ---- dirty data never raises ---------------------------------------------------------------------------------------
any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)


@PROPS
@given(st.lists(st.tuples(any_float, any_float), max_size=40))
def test_nothing_raises_on_dirty_data(pairs):
    x = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for f in [loglog_fit(x, y), loglog_fit(x, y, nonpositive="nan"), window_slope(x, y),
                  full_slope(x, y, smooth=3), StreamingLogLogFit().update(x, y).result()]:
            assert isinstance(f, FitResult)
            assert f.n + f.n_dropped <= x.size
            assert f.reason or all(math.isfinite(getattr(f, k)) for k in ("slope", "intercept", "r2", "stderr"))
            assert f.ok or f.reason
        f = loglog_fit(x, y)
        assert f.n + f.n_dropped == x.size
        burn_in_index(y, smooth=3), burn_in_loss(y, smooth=3), smoothed_loss(y, 3)
        k = knee_fit(x, y, min_points=2)
        assert k.reason or math.isfinite(k.epoch)
        df = compare_curve_forms(x, y)
        assert list(df.index) == list(CURVE_FORMS) and df["best"].sum() == (df.attrs["best"] is not None)
        h = holdout_error(x, y)
        assert isinstance(h, float)
        out = fit_summary(x, y, smooth=3, lrs=np.full(x.size, 0.1))
        assert isinstance(out, dict) and out["n_points"] == x.size
        assert json.loads(json.dumps(out, default=str)) is not None


@pytest.mark.parametrize("bad", [None, "x", [[1.0, 2.0], [3.0]], object()])
def test_non_numeric_inputs_give_reasons(bad):
    f = loglog_fit(bad, [1.0, 2.0])
    assert math.isnan(f.slope) and f.reason
    sf = StreamingLogLogFit().update(bad, 1.0)
    assert not sf.result().ok


# ---- H1's trajectory R² and the curve forms against independent references --------------------------------------
@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.05, 0.5), st.integers(8, 60))
def test_trajectory_r2_is_statsmodels_on_geometric_bin_means(seed, sigma, spe):
    rng = np.random.default_rng(seed)
    e = np.arange(1, 20 * spe + 1) / spe
    y = 0.9 * e**-0.6 * np.exp(sigma * rng.standard_normal(e.size))
    fs = fit_summary(e, y, threshold=10.0, smooth=3, curve_forms=False, knee=False)
    e, y = e[fs["burn_in_index"]:], y[fs["burn_in_index"]:]  # from burn-in to the end
    n = fs["bin_points"]
    k = e.size // n
    df = pd.DataFrame({"b": np.repeat(np.arange(k), n), "x": e[e.size - k * n:], "ly": np.log(y[e.size - k * n:])})
    g = df.groupby("b").agg(x=("x", "mean"), ly=("ly", "mean"))  # bins end at the last point; mean of ln L
    ref = sm.OLS(g.ly.to_numpy(), sm.add_constant(np.log(g.x.to_numpy()))).fit()
    assert math.isclose(fs["r_squared"], ref.rsquared, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(fs["alpha_full_binned"], ref.params[1], rel_tol=1e-9, abs_tol=1e-12)
    ref_b = sm.OLS(np.log(y), sm.add_constant(np.log(e))).fit()
    assert math.isclose(fs["r_squared_batch"], ref_b.rsquared, rel_tol=1e-9, abs_tol=1e-12)


def test_offset_form_least_squares_matches_curve_fit():
    from scipy.optimize import curve_fit

    rng = np.random.default_rng(3)
    x = np.linspace(1, 50, 400)
    y = (0.3 + 2.0 * x**-0.8) * np.exp(0.02 * rng.standard_normal(x.size))
    p = compare_curve_forms(x, y).loc["power_law_offset", "params"]
    ref, _ = curve_fit(lambda t, li, la, b: np.log(np.exp(li) + np.exp(la - b * np.log(t))), x, np.log(y),
                       p0=[np.log(0.2), 0.0, 0.5])
    assert np.allclose([p["L_inf"], p["a"], p["b"]], [np.exp(ref[0]), np.exp(ref[1]), ref[2]], rtol=1e-5)
