"""APTModel: the guarantees of docs/method.md#what-a-measured-step-guarantees, against plain Keras and NumPy."""

import math

import keras
import numpy as np
import pytest

import keras_actcoolr as kac

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def data(n=96, shape=(6, 6, 2), classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, classes, n)


def conv_bn_dropout_model(seed=3, dropout=True):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(name="relu")(x)
    if dropout:
        x = keras.layers.Dropout(0.3, seed=7)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(4)(x)
    return keras.Model(inputs, outputs)


def mlp(seed=5):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,))
    x = keras.layers.Dense(12, activation="relu", name="d1")(inputs)
    x = keras.layers.Dense(9, activation="relu", name="d2")(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    return keras.Model(inputs, outputs)


class TestInvariants:
    def test_zero_learning_rate_gives_zero_temperature_with_batchnorm_and_dropout(self):
        x, y = data()
        model = kac.convert(conv_bn_dropout_model())
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=LOSS)
        logger = kac.TemperatureLogger(every_step=2)
        model.fit(x, y, batch_size=16, epochs=1, callbacks=[logger], verbose=0, shuffle=False)
        assert [r["step"] for r in logger.history] == [0, 2, 4]
        for record in logger.history:
            assert record["temperature"] == 0.0
            assert set(record["layers"]) == {"relu", "hidden_relu"}
            assert all(t == 0.0 for t in record["layers"].values())

    def test_measured_step_leaves_state_as_a_plain_keras_step(self):
        x, y = data(n=16)
        plain = conv_bn_dropout_model()
        converted = kac.convert(plain)
        plain.compile(optimizer=keras.optimizers.SGD(0.3, momentum=0.9), loss=LOSS)
        converted.compile(optimizer=keras.optimizers.SGD(0.3, momentum=0.9), loss=LOSS)
        logger = kac.TemperatureLogger(every_step=1)
        history_plain = plain.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
        history_apt = converted.fit(x, y, batch_size=16, epochs=2, callbacks=[logger], verbose=0, shuffle=False)
        assert len(logger.history) == 2
        assert logger.history[1]["temperature"] > 0.0
        np.testing.assert_allclose(history_apt.history["loss"], history_plain.history["loss"], rtol=1e-6)
        assert len(plain.weights) == len(converted.weights)
        for a, b in zip(plain.weights, converted.weights):
            # Weights, batch-norm moving statistics and the dropout seed state.
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=1e-7, err_msg=a.path)

    def test_layer_temperatures_match_numpy_reference(self):
        x, y = data(n=64, shape=(10,), classes=3, seed=1)
        reference = mlp()
        model = kac.convert(reference)
        before = [w.numpy() for w in reference.weights]
        reference.compile(optimizer=keras.optimizers.SGD(0.8), loss=LOSS)
        reference.train_on_batch(x, y)
        after = [w.numpy() for w in reference.weights]

        def patterns(weights):
            k1, b1, k2, b2 = weights[:4]
            z1 = x @ k1 + b1
            z2 = np.maximum(z1, 0) @ k2 + b2
            return z1 > 0, z2 > 0

        expected = {}
        for name, p0, p1 in zip(("d1_relu", "d2_relu"), patterns(before), patterns(after)):
            unchanged = np.all(p0 == p1, axis=-1).sum()
            expected[name] = -np.log2(max(unchanged, 0.5) / len(x))
        assert 0 < min(expected.values())

        model.compile(optimizer=keras.optimizers.SGD(0.8), loss=LOSS)
        logger = kac.TemperatureLogger(every_step=1)
        model.fit(x, y, batch_size=64, epochs=1, callbacks=[logger], verbose=0)
        assert model.layer_temperatures().keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_allclose(model.layer_temperatures()[name], value, rtol=1e-12)
        np.testing.assert_allclose(logger.history[0]["temperature"], np.mean(list(expected.values())), rtol=1e-12)

    @pytest.mark.parametrize(
        "steps_per_execution, jit_compile",
        # XLA (slow to compile) in the slow tier; tests/test_performance.py measures under XLA in the default run.
        [pytest.param(1, True, marks=pytest.mark.slow), (4, False), pytest.param(4, True, marks=pytest.mark.slow)],
        ids=["xla", "steps_per_execution_4", "steps_per_execution_4_xla"],
    )
    def test_execution_options_give_the_same_measurements(self, steps_per_execution, jit_compile):
        x, y = data(n=100)

        def run(spe, jit):
            # No dropout: XLA draws other random numbers than TensorFlow's kernels.
            model = kac.convert(conv_bn_dropout_model(dropout=False))
            model.compile(
                optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.05), momentum=0.9),
                loss=LOSS,
                steps_per_execution=spe,
                jit_compile=jit,
            )
            controller = kac.ActCooLR(initial_learning_rate=None, every_step=3, sigma=1.2)
            model.fit(x, y, batch_size=16, epochs=2, callbacks=[controller], verbose=0, shuffle=False)
            return controller.history

        baseline = run(1, False)
        other = run(steps_per_execution, jit_compile)
        # 7 batches per epoch (the last one partial): steps 0..13, measured every 3rd.
        assert [r["step"] for r in baseline] == [0, 3, 6, 9, 12]
        assert [r["step"] for r in other] == [r["step"] for r in baseline]
        for a, b in zip(baseline, other):
            np.testing.assert_allclose(b["temperature"], a["temperature"], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(b["learning_rate"], a["learning_rate"], rtol=1e-5)

    def test_non_measuring_steps_do_not_call_the_layers_twice(self):
        calls = []

        class CountingReLU(kac.APTReLU):
            def call(self, inputs):
                calls.append(1)
                return super().call(inputs)

        inputs = keras.Input((10,))
        outputs = keras.layers.Dense(3)(CountingReLU()(keras.layers.Dense(8)(inputs)))
        model = kac.APTModel(inputs, outputs)
        model.compile(optimizer="sgd", loss=LOSS, run_eagerly=True)
        x, y = data(n=40, shape=(10,), classes=3)
        model.fit(x, y, batch_size=4, epochs=1, callbacks=[kac.TemperatureLogger(every_step=5)], verbose=0)
        # 10 steps: 2 measured (forward + pass after the step), 8 plain (forward only).
        assert len(calls) == 2 * 2 + 8


class TestAPTModel:
    def test_subclassed_model_measures(self):
        class Net(kac.APTModel):
            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.hidden = keras.layers.Dense(8)
                self.act = kac.APTReLU(name="act")
                self.out = keras.layers.Dense(3)

            def call(self, inputs, training=False):
                return self.out(self.act(self.hidden(inputs)))

        keras.utils.set_random_seed(0)
        model = Net()
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss=LOSS)
        x, y = data(n=32, shape=(10,), classes=3)
        logger = kac.TemperatureLogger(every_step=1)
        model.fit(x, y, batch_size=32, epochs=2, callbacks=[logger], verbose=0)
        assert list(model.layer_temperatures()) == ["act"]
        assert model.layer_temperatures()["act"] == logger.history[-1]["layers"]["act"]

    def test_fit_logs_carry_temperature_and_learning_rate(self):
        x, y = data()
        model = kac.convert(conv_bn_dropout_model())
        model.compile(optimizer=keras.optimizers.SGD(0.02), loss=LOSS)
        logger = kac.TemperatureLogger(every_step=4)
        history = model.fit(x, y, batch_size=16, epochs=2, callbacks=[logger], verbose=0)
        assert history.history["learning_rate"] == pytest.approx([0.02, 0.02])
        # 6 steps per epoch: the epoch logs carry the last measurement of the epoch.
        assert history.history["temperature"][0] == logger.history[1]["temperature"]
        assert history.history["temperature"][1] == logger.history[2]["temperature"]

    def test_plain_model_is_refused_by_the_callbacks(self):
        x, y = data(n=16, shape=(10,), classes=3)
        model = mlp()
        model.compile(optimizer="sgd", loss=LOSS)
        with pytest.raises(ValueError, match="APTModel"):
            model.fit(x, y, epochs=1, callbacks=[kac.TemperatureLogger()], verbose=0)

    def test_model_without_apt_layers_is_refused(self):
        inputs = keras.Input((10,))
        model = kac.APTModel(inputs, keras.layers.Dense(3)(keras.layers.ReLU()(inputs)))
        model.compile(optimizer="sgd", loss=LOSS)
        x, y = data(n=16, shape=(10,), classes=3)
        with pytest.raises(ValueError, match="no APTReLU"):
            model.fit(x, y, epochs=1, callbacks=[kac.TemperatureLogger()], verbose=0)


def actcoolr_mlp():
    """`mlp()` converted and compiled with SGD (momentum: the optimizer has state) on an ActCooLRSchedule."""
    model = kac.convert(mlp())
    model.compile(optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.1), momentum=0.9), loss=LOSS)
    return model


class TestRateCallbackConflicts:
    @pytest.mark.parametrize(
        "controller",
        [lambda: kac.ActCooLR(sigma=1.0), lambda: kac.DynamicActCooLR()],
        ids=["actcoolr", "dynamic"],
    )
    @pytest.mark.parametrize(
        "other, name",
        [
            (lambda: keras.callbacks.ReduceLROnPlateau(monitor="loss"), "ReduceLROnPlateau"),
            (lambda: keras.callbacks.LearningRateScheduler(lambda epoch, rate: rate), "LearningRateScheduler"),
        ],
        ids=["reduce_on_plateau", "scheduler"],
    )
    @pytest.mark.parametrize("other_first", [False, True], ids=["controller_first", "other_first"])
    def test_keras_rate_callback_next_to_a_controller_is_refused_before_any_step(
        self, controller, other, name, other_first
    ):
        x, y = data(n=16, shape=(10,), classes=3)
        model = actcoolr_mlp()
        control = controller()
        callbacks = [other(), control] if other_first else [control, other()]
        controller_name = type(control).__name__
        with pytest.raises(
            ValueError,
            match=rf"{name} cannot run next to {controller_name}: .*Remove {name} from `callbacks`.*"
            rf"`min_learning_rate` and `max_learning_rate`",
        ):
            model.fit(x, y, epochs=1, callbacks=callbacks, verbose=0)
        assert int(model.optimizer.iterations) == 0  # refused at the start of fit: no step was taken

    @pytest.mark.parametrize(
        "controllers, names",
        [
            (lambda: [kac.ActCooLR(sigma=1.0), kac.ActCooLR(sigma=2.0)], "ActCooLR, ActCooLR"),
            (lambda: [kac.ActCooLR(sigma=1.0), kac.DynamicActCooLR()], "ActCooLR, DynamicActCooLR"),
        ],
        ids=["two_actcoolr", "actcoolr_and_dynamic"],
    )
    def test_second_controller_is_refused(self, controllers, names):
        x, y = data(n=16, shape=(10,), classes=3)
        model = actcoolr_mlp()
        match = rf"`callbacks` holds 2: {names}\. Pass a single ActCooLR or DynamicActCooLR"
        with pytest.raises(ValueError, match=match):
            model.fit(x, y, epochs=1, callbacks=controllers(), verbose=0)

    def test_positional_callbacks_and_callback_lists_are_checked(self):
        x, y = data(n=16, shape=(10,), classes=3)
        model = actcoolr_mlp()
        callbacks = [kac.ActCooLR(sigma=1.0), keras.callbacks.ReduceLROnPlateau()]
        # fit(x, y, batch_size, epochs, verbose, callbacks)
        with pytest.raises(ValueError, match="ReduceLROnPlateau cannot run next to ActCooLR"):
            model.fit(x, y, 8, 1, 0, callbacks)
        with pytest.raises(ValueError, match="ReduceLROnPlateau cannot run next to ActCooLR"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=keras.callbacks.CallbackList(callbacks))

    def test_rate_callbacks_without_a_controller_run(self):
        x, y = data(n=16, shape=(10,), classes=3)
        model = kac.convert(mlp())
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
        scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, rate: 0.05)
        logger = kac.TemperatureLogger(every_step=1)
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[scheduler, logger], verbose=0)
        assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
        assert [r["step"] for r in logger.history] == [0, 1]


class TestLoadWeights:
    def test_load_weights_into_a_fresh_compiled_model_restores_the_controller(self, tmp_path):
        x, y = data(n=64, shape=(10,), classes=3)
        model = actcoolr_mlp()
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            callbacks=[kac.ActCooLR(every_step=3, sigma=1.3, guards=False, initial_learning_rate=None)],
            verbose=0,
        )
        saved = kac.schedules.find_schedule(model.optimizer).state()
        saved_iterations = int(model.optimizer.iterations)
        path = tmp_path / "trained.weights.h5"
        model.save_weights(path)

        fresh = actcoolr_mlp()
        assert not fresh.optimizer.built
        schedule = kac.schedules.find_schedule(fresh.optimizer)
        before = schedule.state()
        # Training moved the controller's state away from a fresh model's: the load below must restore it.
        moved = ("anchor_step", "anchor_learning_rate", "drift", "min_learning_rate", "max_learning_rate")
        assert all(before[key] != saved[key] for key in moved), (before, saved)
        fresh.load_weights(path)
        restored = schedule.state()
        assert set(restored) == set(saved)
        for key, value in saved.items():  # every variable, read back from the fresh model's optimizer
            assert restored[key] == value or (math.isnan(value) and math.isnan(restored[key])), key
        assert int(fresh.optimizer.iterations) == saved_iterations
        assert float(fresh.optimizer.learning_rate) == float(model.optimizer.learning_rate)
        for restored, kept in zip(fresh.optimizer.variables, model.optimizer.variables):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored), keras.ops.convert_to_numpy(kept))
        for restored, kept in zip(fresh.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(restored, kept)


class Recorder(kac.models.MeasurementObserver):
    """A plain observer (no Keras callback): the protocol's defaults, and the steps it receives."""

    every_step = 3

    def __init__(self):
        self.steps = []

    def on_measurement(self, record, range_analysis):
        self.steps.append((record.step, range_analysis))


class TestObserverProtocol:
    def test_defaults_of_the_base_class(self):
        observer = kac.models.MeasurementObserver()
        assert [observer.steps_to_measurement(step) for step in range(4)] == [0, 0, 0, 0]
        observer.every_step = 4
        # Steps to the next multiple of 4, counted by hand.
        assert [observer.steps_to_measurement(step) for step in range(6)] == [0, 3, 2, 1, 0, 3]
        assert observer.wants_range_analysis(0) is kac.models.AnalysisMode.NONE
        assert observer.on_divergence(0, math.nan) is False
        assert observer.remaining_steps is None and observer.drives_learning_rate is False
        assert isinstance(kac.TemperatureLogger(), kac.models.MeasurementObserver)

    @pytest.mark.parametrize(
        "legacy, mode", [(False, "NONE"), (True, "AFTER_STEP"), ("before_step", "BEFORE_STEP")], ids=str
    )
    def test_values_of_release_0_2_0_are_read_with_a_deprecation_warning(self, legacy, mode):
        with pytest.warns(DeprecationWarning, match="AnalysisMode"):
            assert kac.models.AnalysisMode.of(legacy) is kac.models.AnalysisMode[mode]

    @pytest.mark.parametrize("value", ["after", 1, None], ids=repr)
    def test_other_analysis_values_are_refused(self, value):
        with pytest.raises(ValueError, match=f"AnalysisMode.*Received: {value!r}"):
            kac.models.AnalysisMode.of(value)

    def test_a_plain_observer_measures_the_steps_it_asks_for(self):
        x, y = data(n=7 * 8, shape=(10,), classes=3)
        model = kac.convert(mlp())
        model.compile(optimizer="sgd", loss=LOSS)
        observer = Recorder()
        model.add_measurement_observer(observer)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        # 7 steps (0..6): the multiples of 3, no range analysis.
        assert observer.steps == [(0, None), (3, None), (6, None)]
        # The end of fit unregisters it: a second fit measures nothing for it.
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert len(observer.steps) == 3

    def test_an_object_that_is_no_observer_is_refused(self):
        model = kac.convert(mlp())
        with pytest.raises(TypeError, match="MeasurementObserver.*Received: observer of type object"):
            model.add_measurement_observer(object())

    def test_an_observer_that_drives_the_rate_is_a_controller_for_fit(self):
        class Driver(Recorder):
            drives_learning_rate = True

        x, y = data(n=16, shape=(10,), classes=3)
        model = actcoolr_mlp()
        with pytest.raises(ValueError, match="ReduceLROnPlateau cannot run next to Driver"):
            model.fit(x, y, epochs=1, verbose=0, callbacks=[Driver(), keras.callbacks.ReduceLROnPlateau()])

    def test_measured_steps_keep_steps_per_execution(self):
        # The measured steps are single steps traced on their own: the model's setting is never changed.
        x, y = data(n=10 * 8, shape=(10,), classes=3)
        model = kac.convert(mlp())
        model.compile(optimizer="sgd", loss=LOSS, steps_per_execution=4)
        seen = []
        measured_train_step = model.measured_train_step

        def recording(batch, **kwargs):
            seen.append((kwargs["mode"], model.steps_per_execution))
            return measured_train_step(batch, **kwargs)

        model.measured_train_step = recording
        logger = kac.TemperatureLogger(every_step=3)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[logger])
        assert [r["step"] for r in logger.history] == [0, 3, 6, 9]
        assert seen == [("measure", 4)]  # traced once, with the model's own setting


class TestRequireAPTModel:
    def test_an_apt_model_with_apt_layers_is_returned(self):
        model = kac.convert(mlp())
        assert kac.models.require_apt_model(model, "X") is model

    def test_a_plain_model_is_refused_with_its_type(self):
        with pytest.raises(
            ValueError, match="Caller needs a `keras_actcoolr.APTModel`.*Received: model of type Functional"
        ):
            kac.models.require_apt_model(mlp(), "Caller")

    def test_an_apt_model_without_apt_layers_is_refused(self):
        inputs = keras.Input((10,))
        model = kac.APTModel(inputs, keras.layers.Dense(3)(inputs), name="bare")
        with pytest.raises(ValueError, match="Model 'bare' has no APTReLU layer"):
            kac.models.require_apt_model(model, "Caller")
        with pytest.raises(ValueError, match="Model 'bare' has no APTReLU layer"):
            kac.lr_range_analysis(model, data(n=8, shape=(10,), classes=3))


class TestBuildTrainingState:
    def test_the_optimizer_slots_exist_before_the_first_step_and_are_kept_after(self):
        model = actcoolr_mlp()
        assert not model.optimizer.built
        model.build_training_state()
        assert model.optimizer.built
        # SGD with momentum: one momentum per trainable variable, of its shape, at zero.
        momentums = [v for v in model.optimizer.variables if "momentum" in v.path]
        assert [tuple(m.shape) for m in momentums] == [tuple(v.shape) for v in model.trainable_variables]
        assert all(not np.any(m.numpy()) for m in momentums)
        variables = list(model.optimizer.variables)
        model.build_training_state()
        assert list(model.optimizer.variables) == variables  # built once

    def test_restoring_puts_every_variable_back(self):
        x, y = data(n=16, shape=(10,), classes=3)
        model = actcoolr_mlp()
        before = [v.numpy().copy() for v in model.weights]
        with model.restoring_training_state():
            model.train_on_batch(x, y)
            assert any(not np.array_equal(v.numpy(), b) for v, b in zip(model.weights, before))
        for v, b in zip(model.weights, before):
            np.testing.assert_array_equal(v.numpy(), b)
        assert int(model.optimizer.iterations.numpy()) == 0
