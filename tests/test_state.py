"""`keras_actcoolr.state`: typed part state in optimizer variables, registered parts, files of 0.2.0."""

import dataclasses
import math

import keras
import numpy as np
import pytest

import keras_actcoolr as kac
from keras_actcoolr.state import RANGE_COUNTS, StateVariables, state_field


@dataclasses.dataclass(frozen=True)
class Example:
    count: int = state_field("int64", 3)
    level: float | None = state_field("float32", None)
    scale: float = state_field("float32", 0.5)
    flag: bool = state_field("bool", False)
    counts: np.ndarray | None = state_field("float64", shape=RANGE_COUNTS)


class TestStateVariables:
    def test_fields_are_named_variables_with_their_defaults(self):
        optimizer = keras.optimizers.SGD(0.1)
        part = StateVariables(optimizer, "example", Example, layers=2)
        assert [v.name for v in part.variables] == [
            "actcoolr_example_count",
            "actcoolr_example_level",
            "actcoolr_example_scale",
            "actcoolr_example_flag",
            "actcoolr_example_counts",
        ]
        assert {id(v) for v in part.variables} <= {id(v) for v in optimizer.variables}
        state = part.read()
        assert (state.count, state.level, state.scale, state.flag) == (3, None, 0.5, False)
        np.testing.assert_array_equal(state.counts, np.zeros((25, 2, 2)))

    def test_written_values_read_back_typed_and_none_means_unset(self):
        part = StateVariables(keras.optimizers.SGD(0.1), "example", Example, layers=1)
        counts = np.arange(50.0).reshape(25, 1, 2)
        part.write(count=7, level=1.25, flag=True, counts=counts)
        state = part.read()
        assert (state.count, state.level, state.flag) == (7, 1.25, True)
        assert type(state.count) is int and type(state.flag) is bool
        np.testing.assert_array_equal(state.counts, counts)
        part.write(level=None)
        assert part.get("level") is None and part.get("count") == 7

    def test_counts_without_the_layer_count_are_not_allocated(self):
        part = StateVariables(keras.optimizers.SGD(0.1), "example", Example)
        assert len(part.variables) == 4 and part.read().counts is None
        part.write(counts=np.ones((25, 3, 2)))  # nothing to keep them in: ignored
        assert part.get("counts") is None

    @pytest.mark.parametrize("values, match", [({"colour": 1}, "no field 'colour'"), ({"scale": None}, "not optional")])
    def test_bad_writes_are_refused(self, values, match):
        part = StateVariables(keras.optimizers.SGD(0.1), "example", Example)
        with pytest.raises(ValueError, match=match):
            part.write(**values)

    def test_defaults_can_be_replaced(self):
        part = StateVariables(keras.optimizers.SGD(0.1), "example", Example, defaults={"scale": 2.0})
        assert part.read().scale == 2.0


def compiled(width=8):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(width, activation="relu")(inputs)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(2)(hidden)))
    model.compile(optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.1)), loss="mse")
    return model


class TestRegisteredParts:
    def test_the_controller_parts_are_registered_in_name_order(self):
        assert list(kac.state.registered_parts()) == ["collapse", "runaway", "sigma"]

    def test_a_registered_part_gets_variables_at_compile_and_keeps_them_in_a_file(self, tmp_path):
        @kac.state.register_state("zz_test_part")
        @dataclasses.dataclass(frozen=True)
        class Extra:
            seen: float | None = state_field("float32", None)

        try:
            model = compiled()
            part = kac.state.controller_state(model.optimizer)["zz_test_part"]
            assert part.read() == Extra(seen=None)
            part.write(seen=0.75)
            model.save(tmp_path / "model.keras")
            loaded = keras.models.load_model(tmp_path / "model.keras")
            assert kac.state.controller_state(loaded.optimizer)["zz_test_part"].read() == Extra(seen=0.75)
        finally:
            kac.state.unregister_state("zz_test_part")
        assert "zz_test_part" not in kac.state.registered_parts()

    def test_an_optimizer_without_an_actcoolr_schedule_has_no_controller_state(self):
        optimizer = keras.optimizers.SGD(0.1)
        assert kac.schedules.bind_schedule(optimizer) is None
        assert kac.state.controller_state(optimizer) is None


# The 17 scalars of release 0.2.0, in its order, and the values a store of it holds here.
OLD = {
    "anchor_step": 12,
    "anchor_learning_rate": 0.25,
    "drift": -0.5,
    "min_learning_rate": 1e-3,
    "max_learning_rate": 4.0,
    "sigma": 0.0,
    "collapses": 0,
    "loss_average": math.nan,
    "loss_count": 0,
    "loss_reference": math.nan,
    "loss_minimum": math.nan,
    "rise_learning_rate": 0.0,
    "rise_z": 0.0,
    "start_temperature": 0.0,
    "pool_examples": 48,
    "pool_batches": 3,
    "pool_done": 0,
}


def old_store(model, values):
    """A weights store in the 0.2.0 layout: iterations, the 17 scalars, the pool, then the slots."""
    optimizer = model.optimizer
    state = kac.schedules.find_schedule(optimizer).variables + kac.state.controller_state(optimizer).variables
    slots = [v for v in optimizer.variables[1:] if id(v) not in {id(s) for s in state}]
    entries = [np.int64(9)] + [np.asarray(values[k]) for k in OLD] + [np.full((25, 1, 2), 2.0)]
    entries += [np.full(v.shape, 0.125 * (i + 1), dtype=v.dtype) for i, v in enumerate(slots)]
    return {str(i): value for i, value in enumerate(entries)}, slots


class TestFilesOf020:
    @pytest.mark.parametrize(
        "changes, sigma_ceiling, collapse_ceiling",
        [
            ({}, None, None),  # nothing estimated: "unknown" everywhere
            ({"sigma": 1.5, "start_temperature": 1.25}, 4.0, None),  # an automatic ceiling below 100
            ({"sigma": 1.5, "collapses": 2, "loss_average": 0.5, "rise_learning_rate": 0.3}, None, 4.0),
        ],
        ids=["fresh", "estimated", "collapsed"],
    )
    def test_the_old_layout_maps_onto_the_named_state(self, changes, sigma_ceiling, collapse_ceiling):
        model = compiled()
        model.optimizer.build(model.trainable_variables)
        values = {**OLD, **changes}
        store, slots = old_store(model, values)
        model.optimizer.load_own_variables(store)
        assert int(model.optimizer.iterations) == 9
        rate = kac.schedules.find_schedule(model.optimizer).read()
        assert (rate.anchor_step, rate.anchor_learning_rate, rate.drift) == (12, 0.25, -0.5)
        assert rate.max_learning_rate == 4.0 and rate.min_learning_rate == np.float32(1e-3)
        parts = kac.state.controller_state(model.optimizer)
        sigma, collapse, runaway = (parts[name].read() for name in ("sigma", "collapse", "runaway"))
        # 0.2.0's sentinels (0 for sigma, start temperature and rise; NaN for the losses) read None.
        assert sigma.sigma == (values["sigma"] or None)
        assert sigma.start_temperature == (values["start_temperature"] or None)
        rise = values["rise_learning_rate"] or None
        assert runaway.rise_learning_rate == (None if rise is None else pytest.approx(rise))
        assert collapse.loss_average == (None if math.isnan(values["loss_average"]) else values["loss_average"])
        assert (sigma.pool_examples, sigma.pool_batches, sigma.pool_done) == (48, 3, False)
        np.testing.assert_array_equal(sigma.pool_counts, np.full((25, 1, 2), 2.0))
        assert collapse.collapses == values["collapses"]
        assert (sigma.ceiling, collapse.ceiling) == (sigma_ceiling, collapse_ceiling)
        for i, slot in enumerate(slots):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(slot), np.full(slot.shape, 0.125 * (i + 1)))

    def test_a_store_of_another_length_is_left_to_keras(self):
        model = compiled()
        model.optimizer.build(model.trainable_variables)
        store, _ = old_store(model, OLD)
        del store[str(len(store) - 1)]
        with pytest.warns(UserWarning, match="Skipping variable loading"):
            model.optimizer.load_own_variables(store)
        assert int(model.optimizer.iterations) == 0


def test_the_schedules_pool_accessors_are_deprecated_and_reach_the_estimators_state():
    model = compiled()
    schedule = kac.schedules.find_schedule(model.optimizer)
    counts = np.arange(50.0).reshape(25, 1, 2)
    with pytest.warns(DeprecationWarning, match="assign_pool_counts"):
        schedule.assign_pool_counts(counts)
    np.testing.assert_array_equal(kac.state.controller_state(model.optimizer)["sigma"].get("pool_counts"), counts)
    with pytest.warns(DeprecationWarning, match="pool_counts"):
        np.testing.assert_array_equal(schedule.pool_counts(), counts)
