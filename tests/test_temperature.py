"""Pure math of `keras_actcoolr.temperature`, checked against NumPy/SciPy references.

Every expected value is computed in the test from the definitions and controllers
of docs/method.md (closed forms, hand counts, `scipy.stats.norm`,
`scipy.special.erf`/`erfinv`, `scipy.optimize.curve_fit`), never copied from
the code under test.
"""

import math

import numpy as np
import pytest
from scipy import optimize, special, stats

import keras_actcoolr as kac
from keras_actcoolr import temperature

LN2 = math.log(2.0)

#: Table 1 of the supplementary material ("Learning rates used to perform all
#: learning rate range analyses in this work"), transcribed from
#: seed/actcoolr-supplementary.txt in row order.
SUPPLEMENTARY_TABLE_1 = [
    0.000630957344480193, 0.001039122303835169, 0.001711328304161781, 0.002818382931264452,
    0.004641588833612777, 0.007644222742526002, 0.012589254117941668, 0.02073321573485954,
    0.034145488738336005, 0.05623413251903491, 0.09261187281287937, 0.15252229565390182,
    0.25118864315095796, 0.4136820402388507, 0.6812920690579608, 1.122018454301963,
    1.8478497974222907, 3.043219887107722, 5.011872336272725, 8.25404185268019,
    13.593563908785269, 22.38721138568338, 36.869450645195734, 60.72021956909884,
    100.0,
]  # fmt: skip


def synthetic_temperatures(learning_rates, sigma, mu):
    """`T = -log2(1 - Phi(z))`, using the survival function so that P near 1 keeps its digits."""
    z = (np.log(learning_rates) - mu) / sigma
    return -np.log2(stats.norm.sf(z))


def seed_erf_model(lr, sigma, mu):
    """`fit_p` of the paper's listing (supplementary section H): `(1 + erf((ln lr - mu) / (sigma * sqrt 2))) / 2`."""
    return (1.0 + special.erf((np.log(lr) - mu) / (sigma * np.sqrt(2.0)))) / 2.0


def test_public_api_smoke():
    """Each public function, reached through `kac.temperature`, on an input whose result is known by hand."""
    t = kac.temperature
    lrs = np.asarray(SUPPLEMENTARY_TABLE_1)
    assert t.temperature_to_probability(1.0) == pytest.approx(0.5, rel=1e-12)  # 1 - 2**-1
    assert t.probability_to_temperature(0.75) == pytest.approx(2.0, rel=1e-12)  # -log2(1/4)
    assert t.layer_temperature(1, 8) == pytest.approx(3.0, rel=1e-12)  # -log2(1/8)
    assert t.erf_probability(math.exp(-1.0), 0.7, -1.0) == pytest.approx(0.5, rel=1e-12)  # Phi(0)
    assert t.target_temperature(0.5, 2.0, 1.0) == pytest.approx(1.0, rel=1e-12)  # 2 * (1 - 1/2)
    assert t.static_lr_update(0.3, 0.4, 0.4, 1.5, 10) == pytest.approx((0.3, 0.0), abs=1e-15)  # P = P*: keep the rate
    assert t.dynamic_lr_update(0.2, 0.5, 0.5) == pytest.approx((0.2, 0.0), abs=1e-15)  # P = C: keep the rate
    assert t.fit_erf_model(lrs, synthetic_temperatures(lrs, 0.7, -1.0)) == pytest.approx((0.7, -1.0), rel=1e-4)


class TestTemperatureToProbability:
    @pytest.mark.parametrize(
        "t, expected",
        [
            (0.0, 0.0),
            (1.0, 0.5),
            (2.0, 0.75),
            (3.0, 0.875),
            (10.0, 1.0 - 1.0 / 1024.0),
            (np.inf, 1.0),
        ],
        ids=["zero", "one_half", "two", "three", "ten", "inf"],
    )
    def test_exact_values(self, t, expected):
        result = temperature.temperature_to_probability(t)
        assert np.ndim(result) == 0
        np.testing.assert_allclose(float(result), expected, rtol=1e-12, atol=0)

    @pytest.mark.parametrize(
        "t",
        [0.1, 0.5, 1.0, 3.03, 7.25, 20.0, 45.0],
        ids=["0.1", "0.5", "1", "3.03", "7.25", "20", "45"],
    )
    def test_matches_base_two_formula(self, t):
        np.testing.assert_allclose(temperature.temperature_to_probability(t), 1.0 - 2.0 ** (-t), rtol=1e-12)

    def test_array_keeps_shape(self):
        t = np.array([[0.0, 1.0, 2.0], [3.0, 0.5, np.inf]])
        expected = 1.0 - 2.0 ** (-t)
        result = temperature.temperature_to_probability(t)
        assert result.shape == (2, 3)
        np.testing.assert_allclose(result, expected, rtol=1e-12, atol=0)

    def test_not_the_seed_natural_exponent(self):
        # The paper's listing converts with 1 - exp(-T); this library is base 2 (docs/differences.md#base-2-temperature-and-probability).
        assert float(temperature.temperature_to_probability(1.0)) != pytest.approx(1.0 - math.exp(-1.0))


class TestProbabilityToTemperature:
    @pytest.mark.parametrize(
        "p, expected",
        [
            (0.0, 0.0),
            (0.5, 1.0),
            (0.75, 2.0),
            (0.875, 3.0),
            (1.0 - 2.0**-10, 10.0),
            (1.0, np.inf),
        ],
        ids=["zero", "half", "three_quarters", "seven_eighths", "ten", "one_is_inf"],
    )
    def test_exact_values(self, p, expected):
        result = temperature.probability_to_temperature(p)
        assert np.ndim(result) == 0
        if np.isinf(expected):
            assert np.isposinf(result)
        else:
            np.testing.assert_allclose(float(result), expected, rtol=1e-12, atol=0)

    @pytest.mark.parametrize(
        "p", [0.01, 0.2, 0.5, 0.9, 0.999, 1.0 - 1e-9], ids=["0.01", "0.2", "0.5", "0.9", "0.999", "1-1e-9"]
    )
    def test_matches_base_two_formula(self, p):
        np.testing.assert_allclose(temperature.probability_to_temperature(p), -np.log2(1.0 - p), rtol=1e-12)

    def test_array_keeps_shape_and_gives_inf_at_one(self):
        p = np.array([[0.0, 0.5], [0.75, 1.0]])
        result = temperature.probability_to_temperature(p)
        assert result.shape == (2, 2)
        np.testing.assert_allclose(result[0], [0.0, 1.0], rtol=1e-12, atol=0)
        assert result[1, 0] == pytest.approx(2.0, rel=1e-12)
        assert np.isposinf(result[1, 1])

    def test_inverse_of_temperature_to_probability(self):
        t = np.array([0.0, 0.01, 0.3, 1.0, 3.03, 12.0, 40.0])
        np.testing.assert_allclose(
            temperature.probability_to_temperature(temperature.temperature_to_probability(t)), t, rtol=1e-12, atol=1e-15
        )

    def test_temperature_to_probability_is_its_inverse(self):
        p = np.array([0.0, 1e-6, 0.1, 0.5, 0.9, 0.999999])
        np.testing.assert_allclose(
            temperature.temperature_to_probability(temperature.probability_to_temperature(p)), p, rtol=1e-12, atol=1e-15
        )


class TestLayerTemperature:
    @pytest.mark.parametrize(
        "flipped, positions",
        [(0, 64), (1, 64), (8, 64), (32, 64), (48, 64), (63, 64), (1, 3), (2, 3), (999, 1000)],
        ids=[
            "none_of_64",
            "1_of_64",
            "8_of_64",
            "half_of_64",
            "48_of_64",
            "63_of_64",
            "1_of_3",
            "2_of_3",
            "999_of_1000",
        ],
    )
    def test_hand_counts(self, flipped, positions):
        expected = -math.log2((positions - flipped) / positions)
        np.testing.assert_allclose(
            temperature.layer_temperature(positions - flipped, positions), expected, rtol=1e-12, atol=1e-15
        )

    @pytest.mark.parametrize(
        "positions, expected",
        [(1, 1.0), (64, 7.0), (1000, -math.log2(0.5 / 1000))],
        ids=["N=1", "N=64", "N=1000"],
    )
    def test_all_changed_is_capped_at_half_a_position(self, positions, expected):
        result = temperature.layer_temperature(0, positions)
        assert np.isfinite(result)
        np.testing.assert_allclose(result, expected, rtol=1e-12)

    @pytest.mark.parametrize("positions", [1, 7, 4096], ids=["N=1", "N=7", "N=4096"])
    def test_nothing_changed_is_zero(self, positions):
        assert temperature.layer_temperature(positions, positions) == 0.0

    @pytest.mark.parametrize("unchanged", [0, 5], ids=["U=0", "U=5"])
    def test_no_positions_is_zero(self, unchanged):
        result = temperature.layer_temperature(unchanged, 0)
        assert np.isfinite(result)
        assert result == 0.0

    def test_arrays(self):
        unchanged = np.array([64, 32, 16, 8, 0, 0])
        positions = np.array([64, 64, 64, 64, 64, 0])
        np.testing.assert_allclose(
            temperature.layer_temperature(unchanged, positions), [0.0, 1.0, 2.0, 3.0, 7.0, 0.0], rtol=1e-12, atol=0
        )

    def test_broadcasts_scalar_positions(self):
        unchanged = np.array([100.0, 50.0, 25.0, 1.0])
        expected = -np.log2(unchanged / 100.0)
        np.testing.assert_allclose(temperature.layer_temperature(unchanged, 100), expected, rtol=1e-12, atol=1e-15)


class TestErfProbability:
    @pytest.mark.parametrize(
        "sigma, mu",
        [(1.0, 0.0), (0.3, math.log(0.1)), (2.5, math.log(3.0)), (1.3, -5.0)],
        ids=["standard", "narrow_at_0.1", "wide_at_3", "low_mu"],
    )
    def test_matches_normal_cdf(self, sigma, mu):
        lrs = np.asarray(SUPPLEMENTARY_TABLE_1)
        expected = stats.norm.cdf((np.log(lrs) - mu) / sigma)
        np.testing.assert_allclose(temperature.erf_probability(lrs, sigma, mu), expected, rtol=1e-12, atol=0)

    @pytest.mark.parametrize(
        "sigma, mu",
        [(1.0, 0.0), (0.3, math.log(0.1)), (2.5, math.log(3.0))],
        ids=["standard", "narrow_at_0.1", "wide_at_3"],
    )
    def test_matches_erf_form(self, sigma, mu):
        lrs = np.asarray(SUPPLEMENTARY_TABLE_1)
        x = (np.log(lrs) - mu) / sigma
        expected = (1.0 + special.erf(x / np.sqrt(2.0))) / 2.0
        # (1 + erf) / 2 cancels for very negative x, hence the absolute tolerance.
        np.testing.assert_allclose(temperature.erf_probability(lrs, sigma, mu), expected, rtol=1e-12, atol=1e-15)

    @pytest.mark.parametrize("sigma, mu", [(1.0, 0.0), (0.7, -2.0)], ids=["standard", "shifted"])
    def test_half_at_exp_mu_and_symmetric(self, sigma, mu):
        assert temperature.erf_probability(math.exp(mu), sigma, mu) == pytest.approx(0.5, rel=1e-12)
        for s in (0.1, 1.0, 2.0):
            lo = temperature.erf_probability(math.exp(mu - s), sigma, mu)
            hi = temperature.erf_probability(math.exp(mu + s), sigma, mu)
            assert lo + hi == pytest.approx(1.0, rel=1e-12)

    def test_scalar_in_scalar_out(self):
        result = temperature.erf_probability(0.5, 1.0, 0.0)
        assert np.ndim(result) == 0
        assert float(result) == pytest.approx(stats.norm.cdf(math.log(0.5)), rel=1e-12)


class TestFitErfModel:
    @pytest.mark.parametrize(
        "sigma, mu",
        [(1.0, 0.0), (1.3, math.log(0.1)), (0.5, math.log(2.0)), (2.0, math.log(0.01)), (3.0, -1.0)],
        ids=["standard", "sigma1.3_at_0.1", "narrow_at_2", "sigma2_at_0.01", "wide"],
    )
    def test_recovers_parameters_from_exact_data(self, sigma, mu):
        lrs = np.asarray(SUPPLEMENTARY_TABLE_1)
        fitted_sigma, fitted_mu = temperature.fit_erf_model(lrs, synthetic_temperatures(lrs, sigma, mu))
        assert isinstance(fitted_sigma, float) and isinstance(fitted_mu, float)
        np.testing.assert_allclose(fitted_sigma, sigma, rtol=1e-4)
        np.testing.assert_allclose(fitted_mu, mu, rtol=1e-4, atol=1e-4)

    def test_accepts_lists(self):
        lrs = list(SUPPLEMENTARY_TABLE_1)
        temps = list(synthetic_temperatures(np.asarray(lrs), 1.0, 0.0))
        np.testing.assert_allclose(temperature.fit_erf_model(lrs, temps), (1.0, 0.0), rtol=1e-4, atol=1e-4)

    @pytest.mark.parametrize(
        "sigma, mu, seed",
        [(1.0, math.log(0.1), 0), (0.8, math.log(1.5), 1), (1.5, math.log(0.02), 2)],
        ids=["at_0.1", "at_1.5", "at_0.02"],
    )
    def test_with_noise_agrees_with_seed_curve_fit(self, sigma, mu, seed):
        lrs = np.asarray(SUPPLEMENTARY_TABLE_1)
        rng = np.random.default_rng(seed)
        probabilities = stats.norm.cdf((np.log(lrs) - mu) / sigma) + rng.normal(scale=0.01, size=lrs.size)
        probabilities = np.clip(probabilities, 0.0, 1.0 - 1e-9)
        temps = -np.log2(1.0 - probabilities)

        # The paper's fit (supplementary section H): curve_fit of (1 + erf((ln lr - mu) / (sigma sqrt 2))) / 2 on P, unbounded.
        p0 = (1.0, float(np.log(lrs[np.argmin(np.abs(probabilities - 0.5))])))
        (ref_sigma, ref_mu), _ = optimize.curve_fit(seed_erf_model, lrs, probabilities, p0=p0)

        fitted_sigma, fitted_mu = temperature.fit_erf_model(lrs, temps)
        np.testing.assert_allclose(fitted_sigma, ref_sigma, rtol=1e-4)
        np.testing.assert_allclose(fitted_mu, ref_mu, rtol=1e-4, atol=1e-4)
        # and still near the truth for this small noise
        np.testing.assert_allclose(fitted_sigma, sigma, rtol=0.1)
        np.testing.assert_allclose(fitted_mu, mu, atol=0.1)

    @pytest.mark.parametrize(
        "lrs, temps, match",
        [
            ([0.1, 1.0, 10.0], [0.1, 1.0], "must have the same length"),
            ([0.1], [1.0], "At least 2 points"),
            ([], [], "At least 2 points"),
            ([0.0, 1.0, 10.0], [0.1, 1.0, 3.0], "must be positive and finite"),
            ([-0.1, 1.0, 10.0], [0.1, 1.0, 3.0], "must be positive and finite"),
            ([0.1, np.inf, 10.0], [0.1, 1.0, 3.0], "must be positive and finite"),
            ([0.1, 1.0, 10.0], [1.0, 1.0, 1.0], "cannot be fitted"),
            ([0.1, 1.0, 10.0], [0.0, 0.0, 0.0], "cannot be fitted"),
            ([0.1, 1.0, 10.0], [np.inf, np.inf, np.inf], "cannot be fitted"),
        ],
        ids=[
            "mismatched_lengths",
            "one_point",
            "no_points",
            "zero_lr",
            "negative_lr",
            "infinite_lr",
            "constant_temperatures",
            "all_zero_temperatures",
            "all_infinite_temperatures",
        ],
    )
    def test_rejects_bad_inputs(self, lrs, temps, match):
        with pytest.raises(ValueError, match=match):
            temperature.fit_erf_model(lrs, temps)


class TestRangeLearningRates:
    def test_equals_supplementary_table_1(self):
        assert temperature.RANGE_LEARNING_RATES.shape == (25,)
        np.testing.assert_allclose(temperature.RANGE_LEARNING_RATES, SUPPLEMENTARY_TABLE_1, rtol=1e-12, atol=0)

    @pytest.mark.parametrize(
        "index, expected",
        [(0, 0.000630957344480193), (12, 0.25118864315095796), (24, 100.0)],
        ids=["first", "13th", "last"],
    )
    def test_table_entries(self, index, expected):
        assert temperature.RANGE_LEARNING_RATES[index] == pytest.approx(expected, rel=1e-12)

    def test_log_spaced_from_10_to_the_minus_3_2_to_100(self):
        exponents = np.log10(temperature.RANGE_LEARNING_RATES)
        np.testing.assert_allclose(exponents[[0, -1]], [-3.2, 2.0], rtol=1e-12)
        np.testing.assert_allclose(np.diff(exponents), 5.2 / 24, rtol=1e-9)

    def test_read_only(self):
        assert not temperature.RANGE_LEARNING_RATES.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            temperature.RANGE_LEARNING_RATES[0] = 1.0


class TestTargetTemperature:
    @pytest.mark.parametrize(
        "progress, start, gamma, expected",
        [
            (0.5, 3.03, 1.0, 1.515),
            (0.25, 3.03, 1.0, 3.03 * 0.75),
            (0.25, 2.0, 2.0, 2.0 * 0.75**2),
            (0.5, 4.0, 0.5, 4.0 * math.sqrt(0.5)),
            (0.9, 1.0, 3.0, 0.1**3),
        ],
        ids=["linear_half", "linear_quarter", "quadratic", "square_root", "cubic"],
    )
    def test_closed_form(self, progress, start, gamma, expected):
        np.testing.assert_allclose(temperature.target_temperature(progress, start, gamma), expected, rtol=1e-12)

    def test_default_gamma_is_linear(self):
        progress = np.linspace(0.0, 1.0, 11)
        np.testing.assert_allclose(
            temperature.target_temperature(progress, 3.03), 3.03 * (1.0 - progress), rtol=1e-12, atol=1e-15
        )

    @pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0], ids=["gamma0.5", "gamma1", "gamma2"])
    def test_endpoints(self, gamma):
        assert temperature.target_temperature(0.0, 3.03, gamma) == pytest.approx(3.03, rel=1e-12)
        assert temperature.target_temperature(1.0, 3.03, gamma) == 0.0

    @pytest.mark.parametrize(
        "progress, expected",
        [(-0.5, 3.03), (-1e-9, 3.03), (1.0 + 1e-9, 0.0), (2.0, 0.0)],
        ids=["below_zero", "just_below_zero", "just_above_one", "above_one"],
    )
    def test_clips_progress(self, progress, expected):
        result = temperature.target_temperature(progress, 3.03, 2.0)
        assert np.isfinite(result)
        np.testing.assert_allclose(result, expected, rtol=1e-12, atol=0)

    @pytest.mark.parametrize("gamma", [0.25, 0.5, 1.0, 2.0, 4.0], ids=["0.25", "0.5", "1", "2", "4"])
    def test_monotonic_decrease(self, gamma):
        values = temperature.target_temperature(np.linspace(0.0, 1.0, 101), 3.03, gamma)
        assert np.all(np.diff(values) < 0)

    def test_array_input(self):
        progress = np.array([[0.0, 0.5], [0.75, 1.0]])
        expected = 2.0 * (1.0 - progress) ** 2
        result = temperature.target_temperature(progress, 2.0, 2.0)
        assert result.shape == (2, 2)
        np.testing.assert_allclose(result, expected, rtol=1e-12, atol=0)


def reference_static_update(lr, p, p_target, sigma, every_step, epsilon=1e-6):
    """docs/method.md#the-static-controller with scipy.stats.norm.ppf and P, P* clamped to [eps, 1 - eps]."""
    p = min(max(p, epsilon), 1.0 - epsilon)
    p_target = min(max(p_target, epsilon), 1.0 - epsilon)
    lr_target = lr * math.exp(sigma * (stats.norm.ppf(p_target) - stats.norm.ppf(p)))
    d = (lr_target - lr) / every_step
    return lr + d, d / every_step, lr_target


class TestStaticLrUpdate:
    @pytest.mark.parametrize(
        "lr, p, p_target, sigma, every_step",
        [
            (0.1, 0.6, 0.4, 1.0, 10),
            (0.1, 0.3, 0.7, 1.0, 10),
            (0.05, 0.9, 0.5, 0.4, 5),
            (1.0, 0.2, 0.875, 2.0, 20),
            (3.0, 0.99, 0.01, 0.7, 3),
            (1e-3, 0.5, 0.75, 1.3, 100),
        ],
        ids=["cool_down", "heat_up", "narrow_sigma", "wide_sigma", "extreme_probabilities", "small_lr"],
    )
    def test_matches_reference(self, lr, p, p_target, sigma, every_step):
        new_lr, drift = temperature.static_lr_update(lr, p, p_target, sigma, every_step)
        ref_lr, ref_drift, _ = reference_static_update(lr, p, p_target, sigma, every_step)
        assert isinstance(new_lr, float) and isinstance(drift, float)
        np.testing.assert_allclose(new_lr, ref_lr, rtol=1e-12)
        np.testing.assert_allclose(drift, ref_drift, rtol=1e-10)

    @pytest.mark.parametrize(
        "lr, p, p_target, sigma, every_step",
        [(0.1, 0.6, 0.4, 1.0, 10), (1.0, 0.2, 0.875, 2.0, 20), (0.02, 0.05, 0.95, 0.5, 4)],
        ids=["cool_down", "heat_up", "far_apart"],
    )
    def test_equals_seed_form(self, lr, p, p_target, sigma, every_step):
        # adapt_lr_with_stats of the paper's listing: b = ln lr - sigma sqrt2 erfinv(2P - 1),
        # lr_target = exp(sigma sqrt2 erfinv(2P* - 1) + b),
        # lr <- lr (1 - 1/every) + lr_target / every, grad = (lr_target - lr) / every, drift = grad / every.
        mu_hat = math.log(lr) - sigma * math.sqrt(2.0) * special.erfinv(2.0 * p - 1.0)
        lr_target = math.exp(mu_hat + sigma * math.sqrt(2.0) * special.erfinv(2.0 * p_target - 1.0))
        seed_lr = lr * (1.0 - 1.0 / every_step) + lr_target / every_step
        seed_drift = (lr_target - lr) / every_step / every_step

        new_lr, drift = temperature.static_lr_update(lr, p, p_target, sigma, every_step)
        np.testing.assert_allclose(new_lr, seed_lr, rtol=1e-10)
        np.testing.assert_allclose(drift, seed_drift, rtol=1e-8)

    @pytest.mark.parametrize(
        "lr, p, p_target, sigma, every_step",
        [(0.1, 0.6, 0.4, 1.0, 10), (1.0, 0.2, 0.875, 2.0, 20), (0.02, 0.05, 0.95, 0.5, 4), (0.3, 0.7, 0.2, 1.2, 1)],
        ids=["cool_down", "heat_up", "far_apart", "every_step"],
    )
    def test_full_tracking_reaches_the_target_rate(self, lr, p, p_target, sigma, every_step):
        # The seed form's lr_target; the first step is the paper's, then the drift is d, not d / every_step.
        lr_target = lr * math.exp(
            sigma * math.sqrt(2.0) * (special.erfinv(2.0 * p_target - 1.0) - special.erfinv(2.0 * p - 1.0))
        )
        new_lr, drift = temperature.static_lr_update(lr, p, p_target, sigma, every_step, full_tracking=True)
        np.testing.assert_allclose(new_lr, lr + (lr_target - lr) / every_step, rtol=1e-10)
        np.testing.assert_allclose(drift, (lr_target - lr) / every_step, rtol=1e-8)
        np.testing.assert_allclose(new_lr + (every_step - 1) * drift, lr_target, rtol=1e-8)

    @pytest.mark.parametrize("p", [0.0, 1e-3, 0.3, 0.5, 0.999, 1.0], ids=["0", "1e-3", "0.3", "0.5", "0.999", "1"])
    def test_on_target_keeps_learning_rate(self, p):
        new_lr, drift = temperature.static_lr_update(0.1, p, p, 1.3, 10)
        assert new_lr == 0.1
        assert drift == 0.0

    @pytest.mark.parametrize(
        "p, p_target",
        [(0.0, 0.5), (1.0, 0.5), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0), (1.0, 0.0)],
        ids=["P=0", "P=1", "P*=0", "P*=1", "P=0_P*=1", "P=1_P*=0"],
    )
    def test_clamps_extreme_probabilities(self, p, p_target):
        new_lr, drift = temperature.static_lr_update(0.1, p, p_target, 1.0, 10)
        ref_lr, ref_drift, _ = reference_static_update(0.1, p, p_target, 1.0, 10)
        assert np.isfinite(new_lr) and new_lr > 0
        assert np.isfinite(drift)
        np.testing.assert_allclose(new_lr, ref_lr, rtol=1e-9)
        np.testing.assert_allclose(drift, ref_drift, rtol=1e-9)

    @pytest.mark.parametrize("epsilon", [1e-3, 1e-9], ids=["1e-3", "1e-9"])
    def test_custom_epsilon(self, epsilon):
        new_lr, drift = temperature.static_lr_update(0.1, 1.0, 0.5, 1.0, 10, epsilon=epsilon)
        ref_lr, ref_drift, _ = reference_static_update(0.1, 1.0, 0.5, 1.0, 10, epsilon=epsilon)
        np.testing.assert_allclose(new_lr, ref_lr, rtol=1e-7)
        np.testing.assert_allclose(drift, ref_drift, rtol=1e-7)

    @pytest.mark.parametrize(
        "lr, p, p_target, sigma",
        [(0.1, 0.6, 0.4, 1.0), (2.0, 0.1, 0.9, 0.5), (0.003, 0.0, 0.5, 1.3)],
        ids=["cool_down", "heat_up", "clamped"],
    )
    def test_every_step_one_lands_on_target(self, lr, p, p_target, sigma):
        new_lr, drift = temperature.static_lr_update(lr, p, p_target, sigma, 1)
        _, _, lr_target = reference_static_update(lr, p, p_target, sigma, 1)
        np.testing.assert_allclose(new_lr, lr_target, rtol=1e-12)
        np.testing.assert_allclose(drift, lr_target - lr, rtol=1e-10)

    def test_interpolation_reaches_target_over_the_interval(self):
        # One measured step plus every_step - 1 drift steps close the gap by d + (every - 1) d / every.
        lr, every_step = 0.1, 10
        new_lr, drift = temperature.static_lr_update(lr, 0.7, 0.3, 1.0, every_step)
        _, _, lr_target = reference_static_update(lr, 0.7, 0.3, 1.0, every_step)
        d = (lr_target - lr) / every_step
        expected = lr + d + (every_step - 1) * d / every_step
        np.testing.assert_allclose(new_lr + (every_step - 1) * drift, expected, rtol=1e-12)

    @pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0], ids=["sigma0.3", "sigma1", "sigma3"])
    @pytest.mark.parametrize("every_step", [1, 10], ids=["every1", "every10"])
    def test_never_nan_or_inf_on_grid(self, sigma, every_step):
        grid = np.linspace(0.0, 1.0, 11)
        for p in grid:
            for p_target in grid:
                new_lr, drift = temperature.static_lr_update(0.1, float(p), float(p_target), sigma, every_step)
                assert np.isfinite(new_lr) and new_lr > 0, (p, p_target)
                assert np.isfinite(drift), (p, p_target)

    @pytest.mark.parametrize(
        "p, p_target, direction",
        [(0.8, 0.2, -1), (0.2, 0.8, 1)],
        ids=["too_hot_lowers_lr", "too_cold_raises_lr"],
    )
    def test_direction(self, p, p_target, direction):
        new_lr, drift = temperature.static_lr_update(0.1, p, p_target, 1.0, 10)
        assert np.sign(new_lr - 0.1) == direction
        assert np.sign(drift) == direction


class TestDynamicLrUpdate:
    @pytest.mark.parametrize(
        "lr, p, target, rate, expected_step",
        [
            (0.1, 0.6, 0.5, 0.05, -0.01),
            (0.1, 0.4, 0.5, 0.05, 0.01),
            (0.5, 0.9, 0.1, 0.1, -0.16),
            (0.02, 0.0, 1.0, 0.01, 0.02),
            (0.3, 0.25, 0.25, 0.05, 0.0),
        ],
        ids=["too_hot", "too_cold", "custom_rate", "extremes", "on_target"],
    )
    def test_sgd_step(self, lr, p, target, rate, expected_step):
        new_lr, step = temperature.dynamic_lr_update(lr, p, target, rate)
        assert isinstance(new_lr, float) and isinstance(step, float)
        np.testing.assert_allclose(step, expected_step, rtol=1e-12, atol=1e-17)
        np.testing.assert_allclose(new_lr, lr + expected_step, rtol=1e-12)

    def test_default_rate_is_0_05(self):
        # g = 2 (P - C) = 2 * 0.25; step = -0.05 g = -0.025 (docs/method.md#the-dynamic-controller).
        new_lr, step = temperature.dynamic_lr_update(0.2, 0.75, 0.5)
        np.testing.assert_allclose(step, -0.025, rtol=1e-12)
        np.testing.assert_allclose(new_lr, 0.175, rtol=1e-12)

    def test_step_is_independent_of_learning_rate(self):
        _, step_small = temperature.dynamic_lr_update(1e-4, 0.7, 0.2)
        _, step_large = temperature.dynamic_lr_update(10.0, 0.7, 0.2)
        assert step_small == step_large


class TestAutoStartTemperature:
    def layers(self, params):
        rates = temperature.RANGE_LEARNING_RATES
        return rates, np.stack([synthetic_temperatures(rates, s, m) for s, m in params], axis=1)

    @pytest.mark.parametrize(
        "params",
        [
            [(1.2, np.log(0.1))],
            [(1.0, np.log(0.01)), (1.5, np.log(0.1)), (0.8, np.log(1.0))],
            [(1.0, np.log(0.05)), (1.0, np.log(0.05)), (2.0, np.log(0.5)), (0.7, np.log(0.002))],
        ],
        ids=["one_layer", "three_layers", "four_layers"],
    )
    def test_mean_layer_temperature_where_the_median_layer_is_at_one_half(self, params):
        rates, temperatures = self.layers(params)
        sigmas, mus = np.array(params).T
        rate = np.exp(np.median(mus))  # closed form: the median layer's P(rate) = 1/2
        expected = np.mean(-np.log2(1.0 - stats.norm.cdf((np.log(rate) - mus) / sigmas)))
        expected = float(np.clip(expected, *temperature.AUTO_START_BOUNDS))
        assert temperature.auto_start_temperature(rates, temperatures) == pytest.approx(expected, rel=1e-5)

    def test_one_layer_gives_one(self):
        rates, temperatures = self.layers([(1.3, np.log(0.2))])
        assert temperature.auto_start_temperature(rates, temperatures) == pytest.approx(1.0, rel=1e-5)  # P = 1/2

    def test_slowest_layer_with_quantile_one(self):
        params = [(1.0, np.log(0.01)), (1.0, np.log(1.0))]
        rates, temperatures = self.layers(params)
        # At lr = 1 the slow layer is at P = 1/2 (T = 1), the fast one at Phi(ln(100)).
        fast = -np.log2(1.0 - stats.norm.cdf(np.log(100.0)))
        assert temperature.auto_start_temperature(rates, temperatures, quantile=1.0) == pytest.approx(
            min((1.0 + fast) / 2, temperature.AUTO_START_BOUNDS[1]), rel=1e-5
        )

    def test_clipped_to_bounds(self):
        # At the median layer's midpoint lr = 0.5 the fast layer is at z = ln(250) / 0.5, T ~ 90.
        params = [(0.5, np.log(0.002)), (0.5, np.log(0.5)), (0.5, np.log(0.5))]
        rates, temperatures = self.layers(params)
        assert temperature.auto_start_temperature(rates, temperatures) == temperature.AUTO_START_BOUNDS[1]
        assert (
            temperature.auto_start_temperature(rates, temperatures, bounds=(0.1, 100.0))
            > temperature.AUTO_START_BOUNDS[1]
        )

    def test_layers_that_cannot_be_fitted_are_skipped(self):
        rates, temperatures = self.layers([(1.3, np.log(0.2))])
        dead = np.zeros((rates.size, 1))
        both = np.concatenate([temperatures, dead], axis=1)
        assert temperature.auto_start_temperature(rates, both) == pytest.approx(1.0, rel=1e-5)

    def test_no_layer_fitted_is_a_clear_error(self):
        rates = temperature.RANGE_LEARNING_RATES
        with pytest.raises(ValueError, match="no layer's range analysis could be fitted .*every measured temperature"):
            temperature.auto_start_temperature(rates, np.zeros((rates.size, 3)))
        with pytest.raises(ValueError, match=r"must have shape `\[len\(learning_rates\), layers\]`"):
            temperature.auto_start_temperature(rates, np.zeros((3, rates.size)))


class TestErfLearningRate:
    @pytest.mark.parametrize("sigma, mu", [(1.0, 0.0), (0.7, -3.0), (2.5, 1.2)])
    def test_closed_form_and_inverse_of_erf_probability(self, sigma, mu):
        probabilities = np.array([0.01, 0.25, 0.5, 0.9, 0.999])
        expected = np.exp(mu + sigma * stats.norm.ppf(probabilities))
        rates = temperature.erf_learning_rate(probabilities, sigma, mu)
        np.testing.assert_allclose(rates, expected, rtol=1e-12)
        np.testing.assert_allclose(temperature.erf_probability(rates, sigma, mu), probabilities, rtol=1e-10)

    def test_probability_is_clamped(self):
        assert temperature.erf_learning_rate(1.0, 1.0, 0.0, epsilon=1e-3) == pytest.approx(
            math.exp(stats.norm.ppf(1 - 1e-3)), rel=1e-12
        )
        assert temperature.erf_learning_rate(0.0, 1.0, 0.0, epsilon=1e-3) == pytest.approx(
            math.exp(stats.norm.ppf(1e-3)), rel=1e-12
        )


class TestGuardArithmetic:
    def test_temperature_re_exports_the_guard_arithmetic(self):
        from keras_actcoolr import guard_math

        for name in guard_math.__all__:
            assert getattr(temperature, name) is getattr(guard_math, name)
            assert name in temperature.__all__

    def test_loss_spiked_by_hand(self):
        # Margin 0.5 * max(2.0 - 1.0, 1.0) = 0.5 above the minimum 1.0.
        assert temperature.loss_spiked(1.6, 1.0, 2.0, 0.5)
        assert not temperature.loss_spiked(1.4, 1.0, 2.0, 0.5)
        assert temperature.loss_spiked(math.nan, 1.0, 2.0, 0.5)


class TestProbit:
    def test_standard_normal_quantile_of_the_clamped_probability(self):
        probabilities = np.array([0.0, 1e-9, 0.025, 0.5, 0.975, 1.0])
        clamped = np.array([1e-6, 1e-6, 0.025, 0.5, 0.975, 1 - 1e-6])
        np.testing.assert_allclose(temperature.probit(probabilities), stats.norm.ppf(clamped), rtol=1e-12)
        assert temperature.probit(0.3, epsilon=0.4) == pytest.approx(stats.norm.ppf(0.4), rel=1e-12)

    def test_the_erf_model_is_linear_in_it(self):
        sigma, mu, rate = 1.5, -2.0, 0.07
        probability = temperature.erf_probability(rate, sigma, mu)
        assert temperature.probit(probability) == pytest.approx((math.log(rate) - mu) / sigma, rel=1e-9)
