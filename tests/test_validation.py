"""`keras_actcoolr.validation`: each check against hand-written accepted and rejected values."""

import math
import re

import numpy as np
import pytest

from keras_actcoolr import validation


def rejects(check, *args, message, **kwargs):
    """The check raises a ValueError whose message is exactly `message`."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check(*args, **kwargs)


class TestInteger:
    @pytest.mark.parametrize("value", [1, 7, np.int64(3), 10**12])
    def test_accepts_integers_at_least_the_minimum(self, value):
        result = validation.integer("every_step", value)
        assert result == value and type(result) is int

    def test_bounds_are_inclusive(self):
        assert validation.integer("depth", 0, minimum=0) == 0
        assert validation.integer("depth", 5, minimum=2, maximum=5) == 5
        assert validation.integer("depth", 2, minimum=2, maximum=5) == 2

    @pytest.mark.parametrize("value", [0, -1, 1.0, 2.5, True, False, "3", None, np.float64(2.0)])
    def test_rejects_others_with_the_argument_and_the_value(self, value):
        rejects(
            validation.integer,
            "every_step",
            value,
            message=f"`every_step` must be an integer >= 1. Received: every_step={value!r}",
        )

    def test_maximum(self):
        rejects(
            validation.integer,
            "percent",
            100,
            minimum=0,
            maximum=99,
            message="`percent` must be an integer in [0, 99]. Received: percent=100",
        )

    def test_any_integer_without_bounds(self):
        assert validation.integer("axis", -3, minimum=None) == -3
        for value in (1.0, True, "1"):
            rejects(
                validation.integer,
                "axis",
                value,
                minimum=None,
                message=f"`axis` must be an integer. Received: axis={value!r}",
            )
        rejects(
            validation.integer,
            "axis",
            3,
            minimum=None,
            maximum=2,
            message="`axis` must be an integer <= 2. Received: axis=3",
        )

    def test_none_only_when_allowed(self):
        assert validation.integer("total_steps", None, minimum=2, allow_none=True) is None
        rejects(
            validation.integer,
            "total_steps",
            1,
            minimum=2,
            allow_none=True,
            message="`total_steps` must be an integer >= 2 or None. Received: total_steps=1",
        )

    def test_at_least_one(self):
        assert validation.integer_at_least_one("batches", 4) == 4
        assert validation.integer_at_least_one("batches", None, allow_none=True) is None
        rejects(
            validation.integer_at_least_one,
            "batches",
            0,
            message="`batches` must be an integer >= 1. Received: batches=0",
        )
        rejects(
            validation.integer_at_least_one,
            "batches",
            None,
            message="`batches` must be an integer >= 1. Received: batches=None",
        )


class TestReals:
    @pytest.mark.parametrize("value", [1e-12, 0.5, 3, np.float32(2.0), np.int32(4)])
    def test_positive_accepts(self, value):
        result = validation.positive("sigma", value)
        assert result == float(value) and type(result) is float

    @pytest.mark.parametrize("value", [0, 0.0, -1.0, math.inf, math.nan, True, "1", None])
    def test_positive_rejects(self, value):
        rejects(
            validation.positive,
            "sigma",
            value,
            message=f"`sigma` must be a positive finite number. Received: sigma={value!r}",
        )

    def test_positive_none(self):
        assert validation.positive("sigma", None, allow_none=True) is None

    @pytest.mark.parametrize("value", [0, 0.0, 2.5])
    def test_non_negative_accepts(self, value):
        assert validation.non_negative("learning_rate", value) == float(value)

    @pytest.mark.parametrize("value", [-1e-9, math.inf, -math.inf, math.nan, False, None])
    def test_non_negative_rejects(self, value):
        rejects(
            validation.non_negative,
            "learning_rate",
            value,
            message=f"`learning_rate` must be a finite number >= 0. Received: learning_rate={value!r}",
        )

    def test_non_negative_none(self):
        assert validation.non_negative("learning_rate", None, allow_none=True) is None
        rejects(
            validation.non_negative,
            "learning_rate",
            -1,
            allow_none=True,
            message="`learning_rate` must be a finite number >= 0 or None. Received: learning_rate=-1",
        )


class TestRealIn:
    def test_open_interval(self):
        assert validation.real_in("t_max", 0.3, 0, 1) == 0.3
        for value in (0, 1, -0.1, 1.5, math.nan, True):
            rejects(
                validation.real_in,
                "t_max",
                value,
                0,
                1,
                message=f"`t_max` must be a number in (0, 1). Received: t_max={value!r}",
            )

    def test_closed_bounds(self):
        assert validation.real_in("momentum", 1, 0, 1, high_open=False) == 1.0
        assert validation.real_in("momentum", 0.5, 0.5, 1, low_open=False, high_open=False) == 0.5
        rejects(
            validation.real_in,
            "momentum",
            0,
            0,
            1,
            high_open=False,
            message="`momentum` must be a number in (0, 1]. Received: momentum=0",
        )
        rejects(
            validation.real_in,
            "momentum",
            0.4,
            0.5,
            1,
            low_open=False,
            high_open=False,
            message="`momentum` must be a number in [0.5, 1]. Received: momentum=0.4",
        )

    def test_none(self):
        assert validation.real_in("t_max", None, 0, 1, allow_none=True) is None
        rejects(
            validation.real_in,
            "t_max",
            2,
            0,
            1,
            allow_none=True,
            message="`t_max` must be a number in (0, 1) or None. Received: t_max=2",
        )


class TestOthers:
    @pytest.mark.parametrize("value", [True, False, np.bool_(True)])
    def test_boolean_accepts(self, value):
        result = validation.boolean("at_train_begin", value)
        assert result is bool(value)

    @pytest.mark.parametrize("value", [1, 0, "yes", None])
    def test_boolean_rejects_truthy_values(self, value):
        rejects(
            validation.boolean,
            "at_train_begin",
            value,
            message=f"`at_train_begin` must be a boolean (True or False). Received: at_train_begin={value!r}",
        )

    def test_one_of(self):
        assert validation.one_of("split", "train", ("train", "test")) == "train"
        for value in ("valid", None, ["train"]):
            rejects(
                validation.one_of,
                "split",
                value,
                ("train", "test"),
                message=f"`split` must be one of 'train', 'test'. Received: split={value!r}",
            )

    def test_callable_or_none(self):
        assert validation.callable_or_none("target", None, "f(progress) -> float") is None
        assert validation.callable_or_none("target", abs, "f(progress) -> float") is abs
        rejects(
            validation.callable_or_none,
            "target",
            3.0,
            "f(progress) -> float",
            message="`target` must be a callable `f(progress) -> float` or None. Received: target=3.0",
        )

    def test_batching(self):
        assert validation.batching(32, None) == (32, None)
        assert validation.batching(8, 2) == (8, 2)
        rejects(validation.batching, 0, 1, message="`batch_size` must be an integer >= 1. Received: batch_size=0")
        rejects(validation.batching, 8, 0, message="`batches` must be an integer >= 1 or None. Received: batches=0")


class TestRangeLearningRates:
    def test_returns_a_flat_float64_array(self):
        rates = validation.range_learning_rates([[0.0, 0.1], [1, 2]])
        assert rates.dtype == np.float64
        np.testing.assert_array_equal(rates, [0.0, 0.1, 1.0, 2.0])

    @pytest.mark.parametrize("value", [[], [0.1, -0.1], [0.1, np.nan], [np.inf, 1.0], "abc", [[0.1], [0.1, 0.2]]])
    def test_rejects(self, value):
        with pytest.raises(ValueError, match=r"^`learning_rates` must be finite and >= 0, and not empty\. Received"):
            validation.range_learning_rates(value)

    @pytest.mark.parametrize("rates", [[0.1], [0.0, 0.1, 0.1]])
    def test_warns_with_fewer_than_two_distinct_positive_rates(self, rates):
        with pytest.warns(UserWarning, match="holds 1 distinct positive rate"):
            validation.range_learning_rates(rates)
