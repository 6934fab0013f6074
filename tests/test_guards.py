"""ActCooLR's guards: dead and saturated layers, the runaway guard, the collapse guard.

The method page (docs/method.md, "Guards") states the rules these tests check.
"""

import dataclasses
import math
import warnings

import keras
import numpy as np
import pytest
from controller_helpers import LOSS, dead_from_the_start
from scipy import stats

import keras_actcoolr as kac


def data(n=160, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0).astype("int64")


def mlp(dead_second_layer=False, initial_learning_rate=0.05, momentum=0.9, seed=1):
    """Two parallel ReLU layers; with `dead_second_layer`, a bias of -100 keeps every unit of the second off.

    Parallel, so that the dead layer does not cut the gradient of the other one.
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,))
    first = keras.layers.Dense(16, activation="relu", name="alive")(inputs)
    bias = keras.initializers.Constant(-100.0 if dead_second_layer else 0.0)
    second = keras.layers.Dense(16, activation="relu", name="second", bias_initializer=bias)(inputs)
    h = keras.layers.Concatenate()([first, second])
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3, name="logits")(h)))
    model.compile(
        optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(initial_learning_rate), momentum=momentum), loss=LOSS
    )
    return model


def paper_rate(rate, temperature, target, sigma, every, low=0.0, high=math.inf):
    """The paper's update of the rate for one measurement, from SciPy (no library code).

    The target rate is clipped to `[low, high]` before the step towards it is taken.
    """
    p = np.clip(1 - 2.0**-temperature, 1e-6, 1 - 1e-6)
    p_target = np.clip(1 - 2.0**-target, 1e-6, 1 - 1e-6)
    lr_target = rate * math.exp(sigma * (stats.norm.ppf(p_target) - stats.norm.ppf(p)))
    return rate + (min(max(lr_target, low), high) - rate) / every


class Snapshots(keras.callbacks.Callback):
    """Weights and optimizer slots at the end of every batch, and the rate of every step."""

    def __init__(self, corrupt_after=(), corruption=None, target=("logits", "kernel")):
        super().__init__()
        self.values, self.rates = [], []
        self.target = target
        self.corrupt_after = {corrupt_after} if isinstance(corrupt_after, int) else set(corrupt_after or ())
        self.corruption = corruption

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations) - 1
        if step in self.corrupt_after:
            layer, name = self.target
            variable = getattr(self.model.get_layer(layer), name)
            variable.assign(self.corruption(np.asarray(variable)))
        self.values.append([np.array(v) for v in guarded(self.model)])


def guarded(model):
    """Model variables and optimizer slots (not the step count, not the controller state)."""
    optimizer = model.optimizer
    controller = kac.schedules.find_schedule(optimizer).variables + kac.state.controller_state(optimizer).variables
    state = {id(v) for v in controller} | {id(optimizer.iterations)}
    return list(model.variables) + [v for v in optimizer.variables if id(v) not in state]


class TestDeadLayers:
    def test_a_dead_layer_is_recorded_and_does_not_raise_the_rate(self):
        x, y = data()
        sigma, every, start = 1.2, 4, 1.5
        runs = {}
        for guards in (True, False):
            model = mlp(dead_second_layer=True, initial_learning_rate=0.5)
            controller = kac.ActCooLR(
                start_temperature=start,
                sigma=sigma,
                every_step=every,
                guards=guards,
                initial_learning_rate=None,
                final_anneal=False,  # a 2-step fit is all final tenth
            )
            model.fit(x, y, batch_size=80, epochs=1, callbacks=[controller], verbose=0, shuffle=False)
            runs[guards] = controller.history[0]
        guarded_record, paper_record = runs[True], runs[False]
        # Same weights and batch: the same measurement, with the second layer dead.
        assert guarded_record["layers"] == paper_record["layers"]
        assert guarded_record["dead"]["second_relu"] == 1.0
        assert guarded_record["layers"]["second_relu"] == 0.0
        alive = guarded_record["layers"]["alive_relu"]
        assert alive > 0
        # The guarded controller follows the alive layer only; the paper's follows the mean with a 0 in it.
        assert guarded_record["control_temperature"] == pytest.approx(alive, rel=1e-12)
        rate, target = guarded_record["learning_rate"], guarded_record["target_temperature"]
        assert guarded_record["next_learning_rate"] == pytest.approx(
            paper_rate(rate, alive, target, sigma, every), rel=1e-6
        )
        assert paper_record["next_learning_rate"] == pytest.approx(
            paper_rate(rate, alive / 2, target, sigma, every), rel=1e-6
        )
        assert guarded_record["next_learning_rate"] < paper_record["next_learning_rate"]

    def test_dead_share_is_the_share_of_channels_never_on(self):
        x, y = data()
        model = mlp()
        logger = kac.TemperatureLogger(every_step=5)
        model.fit(x[:32], y[:32], batch_size=32, epochs=1, callbacks=[logger], verbose=0, shuffle=False)
        # The record of step 0 sees the initial weights (same seed): count by hand with NumPy.
        fresh = mlp()
        pre = keras.Model(fresh.inputs, fresh.get_layer("alive").output).predict(x[:32], verbose=0)
        expected = float(np.mean(~np.any(pre > 0, axis=0)))
        assert logger.history[0]["dead"]["alive_relu"] == pytest.approx(expected, abs=1e-12)

    def test_every_layer_dead_from_the_start_warns(self):
        x, y = data()
        model = dead_from_the_start()
        with pytest.warns(UserWarning, match="Every APTReLU layer of model .* is dead at step 0"):
            model.fit(x, y, batch_size=32, epochs=1, callbacks=[kac.ActCooLR(sigma=1.0, every_step=2)], verbose=0)


class TestSaturation:
    def test_a_layer_whose_every_position_changes_is_flagged_and_left_out(self):
        x, y = data()
        # At a huge rate every position of both layers changes: T = log2(2N), the ceiling.
        model = mlp(initial_learning_rate=1e3, momentum=0.0)
        controller = kac.ActCooLR(sigma=1.0, every_step=4, collapse_guard=False, initial_learning_rate=None)
        recorder = Snapshots()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x[:32], y[:32], batch_size=32, epochs=1, callbacks=[controller, recorder], verbose=0)
        record = controller.history[0]
        ceiling = math.log2(2 * 32)
        assert record["layers"] == pytest.approx({"alive_relu": ceiling, "second_relu": ceiling})
        assert sorted(record["saturated"]) == ["alive_relu", "second_relu"]
        # Nothing resolved is left to follow: the rate is held, not driven to the floor.
        assert record["control_temperature"] is None
        assert record["next_learning_rate"] == pytest.approx(record["learning_rate"], rel=1e-12)

    def test_saturation_rule(self):
        count = kac.temperature.SATURATION_COUNT
        cases = {(count - 1, 1000): True, (count, 1000): False, (0.0, 0.0): False}
        for (unchanged, positions), expected in cases.items():
            assert kac.temperature.is_saturated(unchanged, positions) is expected
        assert kac.temperature.temperature_ceiling(32) == pytest.approx(6.0)


#: The temperature of a count's resolution floor over the batch's 16 positions: P = 0.5 / 16.
FLOOR_16 = -math.log2(1 - 0.5 / 16)


def rising_run(initial_learning_rate, **controller):
    """`mlp` with SGD without momentum, 2 epochs of 10 steps, measured every 2 steps, no start analysis."""
    x, y = data()
    model = mlp(initial_learning_rate=initial_learning_rate, momentum=0.0)
    controller = kac.ActCooLR(
        every_step=2, collapse_guard=False, final_anneal=False, initial_learning_rate=None, **controller
    )
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[controller], verbose=0, shuffle=False)
    return controller


class TestRunawayGuard:
    def test_rule(self):
        limited = kac.temperature.runaway_limited
        # The rate rose 4x (ln 4 / sigma = 1.386 predicted in z); the temperature answered 0.1.
        assert limited(0.4, 0.1, 0.1, 0.0, sigma=1.0, factor=2.0)
        # It answered 0.5 > a quarter of 1.386: not limited.
        assert not limited(0.4, 0.1, 0.5, 0.0, sigma=1.0, factor=2.0)
        # Less than the allowed factor: not limited, whatever the answer.
        assert not limited(0.15, 0.1, -1.0, 0.0, sigma=1.0, factor=2.0)

    def test_cooling_that_moves_the_anchor(self):
        cooled = kac.temperature.runaway_cooled
        # A 2x rise needs an answer of 0.25 * ln 2 / sigma in z: 0.1733 at sigma 1, 0.0866 at sigma 2.
        assert cooled(-0.18, 0.0, sigma=1.0, factor=2.0)
        assert not cooled(-0.17, 0.0, sigma=1.0, factor=2.0)
        assert cooled(-0.09, 0.0, sigma=2.0, factor=2.0)
        assert not cooled(0.5, 0.0, sigma=1.0, factor=2.0)  # warmer: no

    def test_a_rise_between_two_measurements_is_at_most_the_factor(self):
        limit = kac.temperature.limit_rise
        # From 0.1 with a factor of 2: at most 0.2 until the next measurement, 10 steps later.
        assert limit(0.1, 5.0, 0.5, 10, 2.0) == pytest.approx((0.2, 0.0))
        # 0.15 on the next step, then at most (0.2 - 0.15) / 9 a step, reaching 0.2 on the 10th.
        assert limit(0.1, 0.15, 0.01, 10, 2.0) == pytest.approx((0.15, 0.05 / 9))
        assert limit(0.1, 0.12, 0.001, 10, 2.0) == pytest.approx((0.12, 0.001))  # below the cap: as it was
        assert limit(0.1, 0.05, -0.01, 10, 2.0) == pytest.approx((0.05, -0.01))  # a fall: as it was

    @pytest.mark.parametrize("anchor", ["coolest", "rise", None])
    def test_a_rate_rising_without_answer_is_held(self, anchor):
        # A very hot target makes the paper's controller raise the rate at every measurement.
        controller = rising_run(
            0.01,
            start_temperature=6.0,
            gamma=0.01,
            sigma=0.3,
            runaway_factor=1.5,
            **({} if anchor is None else {"runaway_anchor": anchor}),
        )
        guards = [g for g in controller.rate_guard_parts if isinstance(g, kac.callbacks.guards.RunawayGuard)]
        assert [g.anchor for g in guards] == [anchor or "rise"]  # not given: the default, "rise"
        # The temperature barely answers the rise (a few changed patterns of 32 channels at 16 positions, sigma
        # is held at 0.3): the guard holds. Measurements that resolved no change cannot hold (they anchor).
        held = [r for r in controller.history if r["runaway"]]
        assert held, "the guard never acted"
        for record in held:
            assert record["next_learning_rate"] == pytest.approx(record["learning_rate"], rel=1e-6)
            assert record["control_temperature"] > FLOOR_16 * (1 + 1e-9)


def test_a_network_that_reads_no_change_is_not_held_and_its_rate_climbs_by_the_factor():
    # Started at 1e-4, this network resolves no change among the batch's 16 positions at the rates of its
    # first measurements: they read the floor, a bound, not a temperature.
    controller = rising_run(1e-4, start_temperature=1.0, sigma=1.0)
    at_floor = [r for r in controller.history if r["control_temperature"] <= FLOOR_16 * (1 + 1e-9)]
    assert len(at_floor) >= 4, "the network read a change: the test proves nothing"
    for record in at_floor:
        # Not held: the rate doubles (runaway_factor 2) to the next measurement, as far as the guard lets it.
        assert not record["runaway"]
        assert record["next_learning_rate"] == pytest.approx(2.0 * record["learning_rate"], rel=1e-5)


def collapse_run(corruption, every=2, seed=1, corrupt_after=7, target=("logits", "kernel")):
    x, y = data()
    model = mlp(seed=seed)
    controller = kac.ActCooLR(
        sigma=1.0, start_temperature=0.5, every_step=every, snapshot_every=1, initial_learning_rate=None
    )
    recorder = Snapshots(corrupt_after=corrupt_after, corruption=corruption, target=target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=16, epochs=2, callbacks=[controller, recorder], verbose=0, shuffle=False)
    return model, controller, recorder, history, caught


@pytest.mark.parametrize(
    "corruption, kind, reason",
    [(lambda k: np.full_like(k, np.nan), "bad_data", "non-finite loss"), (lambda k: k * 1e4, "retry", "loss spike")],
    ids=["nan_loss", "loss_spike"],
)
def test_a_failure_is_retried_from_the_kept_state_bit_for_bit_with_the_ceiling_unchanged(corruption, kind, reason):
    # Issue 17 item 5 changed this: one failure used to lower the ceiling at once (a "collapse").
    model, controller, recorder, history, caught = collapse_run(corruption)
    assert [e["event"] for e in controller.events] == [kind]
    event = controller.events[0]
    assert event["reason"].startswith(reason)
    restored = event["restored_step"]
    if kind == "bad_data":
        # A non-finite loss at a rate that trained healthily: back to the newest kept state, the
        # last measurement (every 2nd step) before the corruption at the end of step 7.
        assert event["step"] == 8 and restored == 6
        assert event["undone_steps"] == [7, 8] and event["batch"] == 8 and event["epoch"] == 0
        assert event["learning_rate"] <= 1.25 * event["proven_learning_rate"]
    else:
        assert restored < 7 < event["step"]
    # Weights and optimizer slots at the end of the failing step are those kept at the restored step.
    for value, kept in zip(recorder.values[event["step"]], recorder.values[restored]):
        np.testing.assert_array_equal(value, kept)
    # The ceiling is the one in force before, and nothing counts as a collapse.
    before = [r for r in controller.measurements if r["step"] < event["step"]][-1]
    schedule = kac.schedules.find_schedule(model.optimizer).state()
    assert schedule["max_learning_rate"] == pytest.approx(before["max_learning_rate"], rel=1e-6)
    collapse = kac.state.controller_state(model.optimizer)["collapse"].read()
    assert collapse.collapses == 0 and collapse.ceiling is None and history.history["collapses"][-1] == 0
    assert any(f"at step {event['step']}" in str(w.message) for w in caught)
    assert np.isfinite(history.history["loss"][-1])


def test_a_second_failure_soon_after_lowers_the_ceiling():
    model, controller, recorder, history, caught = collapse_run(lambda k: np.full_like(k, np.nan), corrupt_after=(7, 9))
    assert [e["event"] for e in controller.events] == ["bad_data", "collapse"]
    event = controller.events[1]
    assert event["reason"].startswith("non-finite loss")
    assert event["step"] == 10  # the first measured step after the corruption at the end of step 9
    restored = event["restored_step"]
    assert restored < 7
    # Weights and optimizer slots at the end of the collapse step are those kept at the restored step.
    for value, kept in zip(recorder.values[event["step"]], recorder.values[restored]):
        np.testing.assert_array_equal(value, kept)
    # The ceiling is `collapse_backoff` (0.5) times the highest rate since the kept state.
    measured = {r["step"]: r for r in controller.measurements}
    peak = max(
        [measured[s]["learning_rate"] for s in measured if restored < s <= event["step"]]
        + [measured[s]["next_learning_rate"] for s in measured if restored <= s < event["step"]]
        + recorder.rates[restored + 1 : event["step"] + 1]
    )
    assert event["max_learning_rate"] == pytest.approx(0.5 * peak, rel=1e-6)
    assert recorder.rates[event["step"] + 1] == pytest.approx(event["next_learning_rate"], rel=1e-6)
    assert max(recorder.rates[event["step"] + 1 :]) <= event["max_learning_rate"] * (1 + 1e-6)
    # A warning, a log key, and training goes on with a finite loss.
    assert any("Restored the state of step" in str(w.message) for w in caught)
    assert history.history["collapses"][-1] == 1
    assert np.isfinite(history.history["loss"][-1])
    schedule = kac.schedules.find_schedule(model.optimizer).state()
    collapse = kac.state.controller_state(model.optimizer)["collapse"].read()
    assert collapse.collapses == 1
    assert schedule["max_learning_rate"] == pytest.approx(event["max_learning_rate"], rel=1e-6)
    assert collapse.ceiling == pytest.approx(event["max_learning_rate"], rel=1e-6)


def kill_all_but_one(bias):
    """A bias of -100 on every unit but the first: 15 of 16 channels off for every input of `data()`."""
    bias = bias.copy()
    bias[1:] = -100.0
    return bias


def test_a_network_that_mostly_died_collapses_back_to_the_kept_state():
    # One of the two ReLU layers (half of them) loses 15 of its 16 channels after step 7: no layer is
    # wholly dead and the loss need not spike, but the network mostly died.
    model, controller, recorder, history, caught = collapse_run(kill_all_but_one, target=("alive", "bias"))
    assert [e["event"] for e in controller.events] == ["collapse"]
    event = controller.events[0]
    assert event["step"] == 8  # the first measurement after the corruption
    measured = {r["step"]: r for r in controller.measurements}
    # The layers of the measured records are the converted model's APTReLUs in model order; the first
    # follows Dense "alive". 15 / 16 of its channels dead; none before.
    first = list(measured[6]["layers"])[0]
    assert (
        event["reason"]
        == f"1 of 2 APTReLU layers mostly died since step 6 ({first!r}: 94% of its channels dead, 0% then)"
    )
    assert all(share == 0.0 for share in measured[6]["dead"].values())
    # Back to the kept state bit for bit, the ceiling half the highest rate since (as for any collapse).
    restored = event["restored_step"]
    for value, kept in zip(recorder.values[event["step"]], recorder.values[restored]):
        np.testing.assert_array_equal(value, kept)
    assert history.history["collapses"][-1] == 1
    assert any("mostly died" in str(w.message) for w in caught)
    assert np.isfinite(history.history["loss"][-1])


class TestMostlyDied:
    """`collapse.mostly_died` on hand-made records: the rule counted by hand."""

    def record(self, **shares):
        return {"layers": dict.fromkeys(shares, 0.1), "dead": shares}

    def test_half_of_the_layers(self):
        record = self.record(a=0.8, b=0.0)
        assert kac.callbacks.collapse.mostly_died(record, {"a": 0.4, "b": 0.0}) == ["a"]
        assert kac.callbacks.collapse.mostly_died(record, {"a": 0.41, "b": 0.0}) == []  # already half dead

    def test_fewer_than_half_is_a_layer_pruning_itself(self):
        record = self.record(a=1.0, b=0.0, c=0.5)
        assert kac.callbacks.collapse.mostly_died(record, {"a": 0.0, "b": 0.0, "c": 0.0}) == []
        record = self.record(a=1.0, b=0.9, c=0.5, d=0.0)
        assert kac.callbacks.collapse.mostly_died(record, dict.fromkeys("abcd", 0.0)) == ["a", "b"]

    def test_the_guard_compares_with_the_measurement_before_on_16_examples_or_more(self):
        death_reason = kac.callbacks.collapse.death_reason
        kept = {"step": 0, "learning_rate": 0.1, "dead": set(), "shares": {"a": 0.0, "b": 0.0}}
        latest = {"step": 40, "learning_rate": 0.1, "dead": set(), "shares": {"a": 0.0, "b": 0.1}}
        record = dict(self.record(a=0.9, b=0.85), learning_rate=0.1)
        reason = death_reason(dict(record, examples=16), kept, latest)
        assert reason == "2 of 2 APTReLU layers mostly died since step 40 ('a': 90% of its channels dead, 0% then)"
        assert death_reason(dict(record, examples=15), kept, latest) is None
        # Dead step by step (half dead at the measurement before): a layer losing channels as it trains.
        gradual = dict(latest, shares={"a": 0.5, "b": 0.5})
        assert death_reason(dict(record, examples=16), kept, gradual) is None

    def test_below_the_threshold_or_unknown_before(self):
        assert kac.callbacks.collapse.mostly_died(self.record(a=0.79), {"a": 0.0}) == []
        assert kac.callbacks.collapse.mostly_died(self.record(a=0.95), {}) == []


@pytest.mark.slow
def test_guard_state_survives_save_and_load_and_the_next_fit(tmp_path):
    model, controller, _, _, _ = collapse_run(lambda k: np.full_like(k, np.nan), corrupt_after=(7, 9))
    saved = controller_values(model)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    state = controller_values(restored)
    assert state.keys() == saved.keys()
    for key, value in saved.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            assert state[key] is None or math.isnan(state[key]), key
        else:
            assert state[key] == pytest.approx(value), key
    # A new controller on the resumed model keeps the lowered ceiling.
    x, y = data()
    again = kac.ActCooLR(
        sigma=1.0, start_temperature=1.0, every_step=2, max_learning_rate=10.0, initial_learning_rate=None
    )
    restored.fit(x, y, batch_size=16, epochs=1, callbacks=[again], verbose=0)
    ceiling = kac.schedules.find_schedule(restored.optimizer).state()["max_learning_rate"]
    assert ceiling <= saved["rate.max_learning_rate"] * (1 + 1e-6)


def controller_values(model):
    """The rate's state and every part's scalar fields, by `part.field`."""
    values = {f"rate.{k}": v for k, v in kac.schedules.find_schedule(model.optimizer).state().items()}
    for name, part in kac.state.controller_state(model.optimizer).parts.items():
        for key, value in dataclasses.asdict(part.read()).items():
            if key != "pool_counts":
                values[f"{name}.{key}"] = value
    return values


class TestGuardsOff:
    @pytest.mark.slow
    def test_every_guard_off_is_the_paper_controller(self):
        x, y = data()
        histories = []
        every_off = {"collapse_guard": False, "runaway_guard": False, "layer_filter": False, "final_anneal": False}
        for switches in ({"guards": False}, every_off):
            model = mlp(dead_second_layer=True)
            controller = kac.ActCooLR(start_temperature=2.0, every_step=3, initial_learning_rate=None, **switches)
            model.fit(x, y, batch_size=16, epochs=2, callbacks=[controller], verbose=0, shuffle=False)
            histories.append(controller.history)
        first, second = histories
        assert [r["next_learning_rate"] for r in first] == [r["next_learning_rate"] for r in second]
        for record in first:
            rate, temperature = record["learning_rate"], record["temperature"]
            # The target rate is clipped to the bounds [1e-7, 100] before the step towards it.
            expected = paper_rate(rate, temperature, record["target_temperature"], record["sigma"], 3, 1e-7, 100.0)
            assert record["next_learning_rate"] == pytest.approx(expected, rel=1e-6)


class TestBadInput:
    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"loss_tolerance": 0.0}, "loss_tolerance=0.0"),
            ({"runaway_factor": 1.0}, r"runaway_factor.*\(1.0, inf\). Received: runaway_factor=1.0"),
            ({"collapse_backoff": 1.5}, r"collapse_backoff.*\(0.0, 1.0\). Received: collapse_backoff=1.5"),
            ({"snapshot_every": 0}, "snapshot_every=0"),
            ({"guards": "yes"}, "guards='yes'"),
            ({"max_learning_rate": "high"}, "max_learning_rate='high'"),
            ({"runaway_anchor": "start"}, r"one of 'rise', 'coolest'. Received: runaway_anchor='start'"),
        ],
        ids=["tolerance", "factor", "backoff", "snapshot", "switch", "ceiling", "anchor"],
    )
    def test_out_of_range_is_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            kac.ActCooLR(**kwargs)

    def test_target_callable_returning_nan_names_the_progress(self):
        x, y = data()
        model = mlp()
        controller = kac.ActCooLR(sigma=1.0, every_step=2, target_temperature=lambda p: math.nan if p > 0.2 else 1.0)
        with pytest.raises(ValueError, match=r"finite number >= 0. Received: nan at progress=0\.25"):
            model.fit(x[:128], y[:128], batch_size=16, epochs=1, callbacks=[controller], verbose=0)


def test_an_exception_inside_fit_unregisters_the_callbacks():
    class Boom(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:
                raise RuntimeError("boom")

    x, y = data()
    model = mlp()
    controller = kac.ActCooLR(sigma=1.0, every_step=2, initial_learning_rate=None)
    with pytest.raises(RuntimeError, match="boom"):
        model.fit(x, y, batch_size=16, epochs=1, callbacks=[controller, Boom()], verbose=0)
    measured = len(controller.history)
    assert measured > 0
    # A later fit without the controller neither measures for it nor calls it.
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert len(controller.history) == measured


class TestLossSpikeTest:
    """`keras_actcoolr.temperature.LossSpikeTest`: noise-robust, fires on a sustained rise."""

    def test_noisy_but_not_rising_losses_do_not_fire(self):
        # Batch size 1: most examples' losses are near 0, one in four is a confident mistake of 9.
        falling = [2.3, 2.2, 2.0, 1.8, 1.5, 1.2, 1.0, 0.8, 0.6, 0.5]
        noisy = falling + [0.02, 0.01, 0.05, 9.0] * 50 + [0.02, 9.0, 9.0, 0.01] * 10
        assert kac.temperature.loss_spike_index(noisy, 0.5) is None
        # The old test (a moving average above its minimum by the margin, no sustain, no clip) fired on it.
        average, old = None, None
        for index, loss in enumerate(noisy):
            average = loss if average is None else 0.75 * average + 0.25 * loss
            if index == 3:
                reference = minimum = average
            elif index > 3:
                if average - minimum > 0.5 * max(reference - minimum, minimum):
                    old = index
                    break
                minimum = min(minimum, average)
        assert old is not None

    def test_a_sustained_rise_fires_after_sustain_spiked_measurements(self):
        # Four losses of 1 (warm-up: reference = minimum = 1, margin 0.5), then a jump to 3,
        # clipped to 1 + 2 * 0.5 = 2: the average after k of them is 2 - 0.75**k.
        losses = [1.0] * 4 + [3.0] * 20
        first_spiked = next(k for k in range(1, 20) if 2 - 0.75**k - 1 > 0.5)
        assert kac.temperature.loss_spike_index(losses, 0.5) == 3 + first_spiked + 3 - 1
        assert kac.temperature.loss_spike_index([float("nan")] * 10, 0.5) is None


def digit_like_data(n, seed):
    """A 3-class problem on 10 features that a small MLP learns to about 90 percent."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10)).astype("float32")
    return x, (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0).astype("int64")


@pytest.mark.slow
def test_a_nan_sample_is_bad_data_the_ceiling_stays_and_training_goes_on():
    x, y = digit_like_data(640, seed=0)
    x_test, y_test = digit_like_data(2000, seed=1)
    bad_row, batch_size, epochs = 17 * 16 + 3, 16, 3  # in batch 17: an unmeasured step (every_step=2)
    dirty = x.copy()
    dirty[bad_row, 4] = np.nan
    runs = {}
    # Five initializations: one run's accuracy on this small task moves by several points when a few
    # steps are undone, so the cost of the bad sample is judged on the medians.
    for seed in (3, 4, 5, 6, 7):
        for name, inputs in (("clean", x), ("dirty", dirty)):
            model = mlp(seed=seed)
            # A ceiling the rate reaches at once: the bad batch comes at a rate that trained healthily.
            controller = kac.ActCooLR(sigma=1.0, every_step=2, initial_learning_rate=None, max_learning_rate=0.1)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.fit(
                    inputs, y, batch_size=batch_size, epochs=epochs, callbacks=[controller], verbose=0, shuffle=False
                )
            accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test)
            runs[name, seed] = (model, controller, caught, accuracy)
    model, controller, caught, accuracy = runs["dirty", 3]
    steps_per_epoch = 640 // batch_size
    events = controller.events
    assert [e["event"] for e in events] == ["bad_data"] * epochs
    for epoch, event in enumerate(events):
        # The bad batch's update is undone. Its loss may be finite (a ReLU passes NaN on as 0) while
        # its gradient is not: then the NaN shows at the next step's loss, which the event names.
        bad_step = epoch * steps_per_epoch + bad_row // batch_size
        assert event["epoch"] == epoch and event["step"] in (bad_step, bad_step + 1)
        assert event["batch"] == event["step"] - epoch * steps_per_epoch
        assert bad_step in event["undone_steps"] and event["restored_step"] < bad_step
        assert bad_row // batch_size in event["undone_batches"]
        # The ceiling in force before the event is the one after it: not lowered.
        before = [r for r in controller.measurements if r["step"] < event["step"]][-1]
        after = next(r for r in controller.measurements if r["step"] > event["step"])
        assert after["max_learning_rate"] == before["max_learning_rate"]
    assert kac.state.controller_state(model.optimizer)["collapse"].read().collapses == 0
    assert any("bad data" in str(w.message) and f"at step {events[0]['step']}" in str(w.message) for w in caught)
    assert np.isfinite(model.get_layer("logits").kernel.numpy()).all()
    clean = np.median([runs["clean", seed][3] for seed in (3, 4, 5, 6, 7)])
    dirty_runs = [runs["dirty", seed] for seed in (3, 4, 5, 6, 7)]
    assert all(np.isfinite(m.get_layer("logits").kernel.numpy()).all() for m, *_ in dirty_runs)
    assert np.median([run[3] for run in dirty_runs]) >= clean - 0.01


@pytest.mark.slow
def test_a_far_too_high_start_recovers():
    # No range analysis picks the first rate: the schedule's 10.0 kills the network at once.
    x, y = digit_like_data(640, seed=0)
    model = mlp(seed=3, initial_learning_rate=10.0)
    controller = kac.ActCooLR(every_step=4, initial_learning_rate=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(x, y, batch_size=32, epochs=3, callbacks=[controller], verbose=0)
    start = controller.measurements[0]
    assert start["step"] == 0 and start["learning_rate"] == pytest.approx(10.0)
    assert any(e["restored_step"] == 0 for e in controller.events if e["event"] in ("collapse", "retry"))
    assert history.history["loss"][-1] < start["loss"]


# ------------------------------------------------------- the rate guards, one by one


def rate_update(**changes):
    base = dict(step=10, rate=0.1, new_rate=0.15, drift=0.01, probability=0.3, sigma=1.0, every_step=5)
    return kac.callbacks.guards.RateUpdate(**{**base, "total_steps": 100, **changes})


class TestRunawayGuardAlone:
    def guard(self, factor=2.0):
        part = kac.state.StateVariables(keras.optimizers.SGD(0.1), "runaway", kac.callbacks.guards.RunawayState)
        return kac.callbacks.guards.RunawayGuard(part, factor, 1e-6), part

    def test_a_rise_is_anchored_and_capped_at_the_factor(self):
        guard, part = self.guard()
        limited = guard.limit(rate_update(new_rate=0.5, drift=0.1))
        # Cap 2 * 0.1: the next rate 0.2, and no drift above it over the 4 steps after.
        assert (limited.new_rate, limited.drift, limited.runaway) == (pytest.approx(0.2), 0.0, False)
        state = part.read()
        assert state.rise_learning_rate == pytest.approx(0.1)
        assert state.rise_z == pytest.approx(stats.norm.ppf(0.3), rel=1e-6)

    def test_an_unanswered_rise_is_held_and_a_fall_forgets_the_rise(self):
        guard, part = self.guard()
        part.write(rise_learning_rate=0.1, rise_z=float(stats.norm.ppf(0.3)))
        # The rate rose 3x since the anchor and P did not move: the erf model predicted z + ln(3) / sigma.
        held = guard.limit(rate_update(rate=0.3, new_rate=0.6, probability=0.3))
        assert (held.new_rate, held.drift, held.runaway) == (0.3, 0.0, True)
        # A temperature that answered (z up by more than a quarter of ln 3): it may rise, capped.
        answered = float(stats.norm.cdf(stats.norm.ppf(0.3) + 0.5 * np.log(3.0)))
        free = guard.limit(rate_update(rate=0.3, new_rate=0.9, drift=0.0, probability=answered))
        assert (free.new_rate, free.runaway) == (pytest.approx(0.6), False)
        fall = rate_update(rate=0.3, new_rate=0.2, drift=-0.01)
        assert guard.limit(fall) == fall.replace(step_scale=1.0) and part.read().rise_learning_rate is None

    @pytest.mark.parametrize("anchor", ["coolest", "rise"])
    def test_a_network_that_cools_while_the_rate_rises_moves_the_anchor(self, anchor):
        part = kac.state.StateVariables(keras.optimizers.SGD(0.1), "runaway", kac.callbacks.guards.RunawayState)
        guard = kac.callbacks.guards.RunawayGuard(part, 2.0, 1e-6, anchor=anchor)
        part.write(rise_learning_rate=0.1, rise_z=float(stats.norm.ppf(0.3)))
        # The rate rose 3x since the anchor and the network cooled (P 0.3 -> 0.2): training cooled it.
        cooled = guard.limit(rate_update(rate=0.3, new_rate=0.9, drift=0.0, probability=0.2))
        if anchor == "rise":  # read against the start of the rise: unanswered, held
            assert (cooled.new_rate, cooled.runaway) == (0.3, True)
            return
        # The anchor moves to the coolest measurement, (0.3, PhiInv(0.2)); the rise is capped at 2 * 0.3.
        assert (cooled.new_rate, cooled.drift, cooled.runaway) == (pytest.approx(0.6), 0.0, False)
        state = part.read()
        assert state.rise_learning_rate == pytest.approx(0.3)
        assert state.rise_z == pytest.approx(stats.norm.ppf(0.2), rel=1e-6)
        # From there the rule is the same: 0.7 is more than 2x 0.3 and P did not move, so it is held.
        held = guard.limit(rate_update(rate=0.7, new_rate=0.9, drift=0.0, probability=0.2))
        assert (held.new_rate, held.runaway) == (0.7, True)
        # Cooling by less than a 2x rise's answer (z down 0.09 < 0.25 ln 2) leaves the anchor: still held.
        slightly = float(stats.norm.cdf(stats.norm.ppf(0.2) - 0.09))
        held = guard.limit(rate_update(rate=0.7, new_rate=0.9, drift=0.0, probability=slightly))
        assert (held.new_rate, held.runaway) == (0.7, True)
        assert part.read().rise_learning_rate == pytest.approx(0.3)

    def test_a_measurement_that_resolved_no_change_cannot_hold_and_becomes_the_anchor(self):
        guard, part = self.guard()
        floor = 0.5 / 64  # the count's resolution floor: no change seen among 64 positions
        part.write(rise_learning_rate=1e-7, rise_z=float(stats.norm.ppf(floor)))
        # The rate rose 3x since the anchor and P stayed at the floor: read as a rule, unanswered (held) ...
        unanswered = rate_update(rate=3e-7, new_rate=9e-7, drift=0.0, probability=floor)
        assert guard.limit(unanswered).runaway
        # ... but a floor is a bound, not a reading: the rate may rise, by 2x at most, from a new anchor.
        part.write(rise_learning_rate=1e-7, rise_z=float(stats.norm.ppf(floor)))
        free = guard.limit(unanswered.replace(resolved=False))
        assert (free.new_rate, free.drift, free.runaway) == (pytest.approx(6e-7), 0.0, False)
        state = part.read()
        assert state.rise_learning_rate == pytest.approx(3e-7)
        assert state.rise_z == pytest.approx(stats.norm.ppf(floor), rel=1e-6)
        # A measurement that resolves a change is read against that anchor: 7e-7 is more than 2x 3e-7, and z
        # rose by 0.2 ln(7 / 3), less than the quarter of ln(7 / 3) / sigma (sigma 1) the rule asks: held.
        z_up = 0.2 * np.log(7.0 / 3.0)
        answer = float(stats.norm.cdf(stats.norm.ppf(floor) + z_up))
        held = guard.limit(rate_update(rate=7e-7, new_rate=1e-6, drift=0.0, probability=answer))
        assert (held.new_rate, held.runaway) == (7e-7, True)

    def test_a_held_rate_passes_unchanged(self):
        guard, _ = self.guard()
        update = rate_update(probability=None, new_rate=0.1, drift=0.0)
        assert guard.limit(update) == update


class TestFollowedProbability:
    def follow(self, layers, layer_filter=True):
        record = {"layers": layers, "positions": {"a": 64.0, "b": 128.0}}
        part = kac.callbacks.guards.LayerFilter("vector") if layer_filter else None
        return kac.callbacks.guards.followed_probability(record, "vector", part)

    def test_no_change_reads_the_resolution_floor_of_the_smallest_layer_and_is_not_resolved(self):
        probability, temperature, resolved = self.follow({"a": 0.0, "b": 0.0})
        assert probability == pytest.approx(0.5 / 64) and not resolved
        assert temperature == pytest.approx(-math.log2(1 - 0.5 / 64))

    def test_a_change_above_the_floor_is_resolved_and_read_as_it_is(self):
        # Mean temperature 0.1: P = 1 - 2 ** -0.1 = 0.067, above 0.5 / 64 = 0.0078.
        probability, _, resolved = self.follow({"a": 0.05, "b": 0.15})
        assert probability == pytest.approx(1 - 2**-0.1) and resolved
        # Mean 0.005: P = 0.0035, below the floor: the floor, not resolved.
        probability, _, resolved = self.follow({"a": 0.0, "b": 0.01})
        assert probability == pytest.approx(0.5 / 64) and not resolved

    def test_without_the_layer_filter_only_no_change_at_all_is_unresolved(self):
        assert self.follow({"a": 0.0, "b": 0.0}, layer_filter=False) == (0.0, 0.0, False)
        probability, _, resolved = self.follow({"a": 0.0, "b": 0.01}, layer_filter=False)
        assert probability == pytest.approx(1 - 2**-0.005) and resolved


class TestFinalAnnealAlone:
    def test_before_the_tail_nothing_changes_just_before_no_rise_then_the_line_to_zero(self):
        anneal = kac.callbacks.guards.FinalAnneal(0.1)  # the tail starts at step 90 of 100
        early = rate_update(step=80)  # 80 + 5 < 90
        assert anneal.limit(early) == early
        before = anneal.limit(rate_update(step=86))  # its interval reaches into the tail
        assert (before.new_rate, before.drift) == (0.1, 0.0)
        inside = anneal.limit(rate_update(step=95, new_rate=0.2, drift=0.01))
        # The line from 0.1 at step 95 to 0 at step 100: 0.08 on step 96, falling by 0.02 per step.
        assert (inside.new_rate, inside.drift) == (pytest.approx(0.08), pytest.approx(-0.02))
