"""The final-anneal guard: over the last share of training the rate only falls, to 0 at the end."""

import numpy as np
import pytest
from controller_helpers import converted, data

import keras_actcoolr as kac

STEPS_PER_EPOCH, EPOCHS, EVERY = 15, 4, 3  # 120 examples, batch 8
TOTAL = STEPS_PER_EPOCH * EPOCHS


def run(learning_rate_recorder, **kwargs):
    model = converted(initial_learning_rate=0.05)
    x, y = data()
    # A target that stays warm to the end, and no other guard: the controller raises the rate when a
    # measurement reads cold, as it does near the end of training when the network cools faster.
    controller = kac.ActCooLR(
        initial_learning_rate=None,
        every_step=EVERY,
        sigma=1.0,
        target_temperature=lambda p: 0.3,
        runaway_guard=False,
        layer_filter=False,
        collapse_guard=False,
        **kwargs,
    )
    model.fit(x, y, batch_size=8, epochs=EPOCHS, verbose=0, callbacks=[controller, learning_rate_recorder])
    return controller, np.array(learning_rate_recorder.rates)


def test_rate_only_falls_over_the_last_tenth_and_ends_near_zero(fresh_session, learning_rate_recorder):
    controller, rates = run(learning_rate_recorder)
    assert len(rates) == TOTAL
    tail = int(np.ceil(0.9 * TOTAL))  # the first step of the last tenth
    # From the last measurement before it (its interval reaches into the tenth), the rate never rises.
    assert np.all(np.diff(rates[tail - EVERY :]) <= 1e-9)
    assert rates[tail:].max() <= rates[tail] * (1 + 1e-6)
    # The cap is the line from the rate of a measured step in the tail to 0 at step TOTAL.
    for record in controller.measurements:
        step = record["step"]
        if step >= 0.9 * TOTAL:
            remaining = TOTAL - step
            line = record["learning_rate"] * (TOTAL - np.arange(step + 1, TOTAL)) / remaining
            assert np.all(rates[step + 1 :] <= line * (1 + 1e-5) + 1e-9)
    assert rates[-1] <= rates[tail] * 2.0 / (TOTAL - tail)


@pytest.mark.slow
def test_the_guard_switches_off(fresh_session, learning_rate_recorder):
    _, rates = run(learning_rate_recorder, final_anneal=False)
    tail = int(np.ceil(0.9 * TOTAL))
    # Without it the controller raises the rate into the last tenth (what the guard is for; if this
    # ever stops rising, the first test proves nothing).
    assert rates[tail - EVERY :].max() > rates[tail - EVERY] * 1.01


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, "0.1", True])
def test_bad_share_is_refused(share):
    with pytest.raises(ValueError, match="final_anneal_share"):
        kac.ActCooLR(final_anneal_share=share)
    with pytest.raises(ValueError, match="final_anneal"):
        kac.ActCooLR(final_anneal="yes")
