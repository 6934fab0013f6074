"""A second `fit`: the target curve goes on, or starts again with a warning (issue 17 item 4).

The target curve `T0 * (1 - progress) ** gamma` is placed by the optimizer's
step count, which goes on across fits. The expected targets below are the
closed form computed from the steps, independently of the library.
"""

import warnings

import keras
import numpy as np
import pytest
from controller_helpers import converted, data

import keras_actcoolr as kac

BATCH, SAMPLES = 16, 160
STEPS_PER_EPOCH = SAMPLES // BATCH
T0, GAMMA, EVERY = 1.0, 2.0, 2


def controller(**kwargs):
    return kac.ActCooLR(
        sigma=1.0, start_temperature=T0, gamma=GAMMA, every_step=EVERY, initial_learning_rate=None, **kwargs
    )


def fit(model, callback, **kwargs):
    x, y = data(SAMPLES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=BATCH, callbacks=[callback], verbose=0, shuffle=False, **kwargs)
    return [str(w.message) for w in caught if "target curve" in str(w.message)]


def targets(callback):
    return {r["step"]: r["target_temperature"] for r in callback.measurements}


def closed_form(steps, origin, length):
    return {s: T0 * (1 - min((s - origin) / length, 1.0)) ** GAMMA for s in steps}


def test_a_second_fit_without_initial_epoch_warns_and_follows_a_new_curve():
    model = converted()
    fit(model, controller(), epochs=2)
    start = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert start == 2 * STEPS_PER_EPOCH
    again = controller()
    messages = fit(model, again, epochs=2)
    assert len(messages) == 1
    assert "initial_epoch" in messages[0] and "total_steps" in messages[0]
    got = targets(again)
    assert sorted(got) == list(range(start, start + 2 * STEPS_PER_EPOCH, EVERY))
    # Without the new curve every target would be 0 (the first curve ended at step `start`).
    expected = closed_form(got, start, 2 * STEPS_PER_EPOCH)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[start] == pytest.approx(T0)
    (event,) = [e for e in again.events if e["event"] == "new_curve"]
    assert event["origin"] == start and event["total_steps"] == 2 * STEPS_PER_EPOCH


def test_initial_epoch_continues_the_curve_of_one_long_fit():
    single = controller()
    fit(converted(), single, epochs=4)
    model = converted()
    assert fit(model, controller(), epochs=2) == []
    second = controller()
    assert fit(model, second, epochs=4, initial_epoch=2) == []
    got = targets(second)
    assert sorted(got) == list(range(2 * STEPS_PER_EPOCH, 4 * STEPS_PER_EPOCH, EVERY))
    long = targets(single)
    assert got == pytest.approx({s: long[s] for s in got}, rel=1e-12)
    assert got == pytest.approx(closed_form(got, 0, 4 * STEPS_PER_EPOCH), rel=1e-12)


def test_an_explicit_total_steps_spans_the_fits():
    total = 6 * STEPS_PER_EPOCH
    model = converted()
    assert fit(model, controller(total_steps=total), epochs=2) == []
    second = controller(total_steps=total)
    assert fit(model, second, epochs=2) == []
    got = targets(second)
    assert got == pytest.approx(closed_form(got, 0, total), rel=1e-12)
    assert min(got) == 2 * STEPS_PER_EPOCH


@pytest.mark.slow
def test_an_explicit_total_steps_already_passed_warns_and_starts_again():
    total = 2 * STEPS_PER_EPOCH
    model = converted()
    fit(model, controller(total_steps=total), epochs=2)
    second = controller(total_steps=total)
    messages = fit(model, second, epochs=1)
    assert len(messages) == 1 and "total_steps" in messages[0]
    got = targets(second)
    assert got == pytest.approx(closed_form(got, total, total), rel=1e-12)
    assert np.all(np.array(list(got.values())) > 0)
