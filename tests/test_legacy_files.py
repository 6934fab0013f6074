"""Files written by an earlier version load into this one, with every value they hold.

`tests/data/release_0_2_0` was written at commit ddb44d7, the code of release 0.2.0 (`tests/data/make_legacy_files.py`).
The reference values are read from the files' HDF5 weight stores with h5py, by the layout
that version wrote: the optimizer's `iterations`, then the 17 scalars of the
`ActCooLRSchedule` state in the order below, the pooled range-analysis counts, then the
momentum of each trainable variable.
"""

import io
import math
import shutil
import sys
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np

import keras_actcoolr as kac

DATA = Path(__file__).parent / "data" / "release_0_2_0"
sys.path.insert(0, str(DATA.parent))  # make_legacy_files: the network and data of the files

from make_legacy_files import build_model, data  # noqa: E402

# The state that version kept in optimizer variables, in the order it wrote them.
STATE_0_2_0 = (
    "anchor_step",
    "anchor_learning_rate",
    "drift",
    "min_learning_rate",
    "max_learning_rate",
    "sigma",
    "collapses",
    "loss_average",
    "loss_count",
    "loss_reference",
    "loss_minimum",
    "rise_learning_rate",
    "rise_z",
    "start_temperature",
    "pool_examples",
    "pool_batches",
    "pool_done",
)
LAYERS = {"d1": (10, 24), "d2": (24, 16), "out": (16, 3)}


def read_store(store: h5py.File) -> dict:
    """Weights by layer name, and the optimizer's values by their meaning in that version."""
    weights = {}
    for group in store["layers"].values():
        name = group["vars"].attrs.get("name", "")
        if name in LAYERS:
            weights[name] = [np.array(group["vars"][str(i)]) for i in range(2)]
    values = store["optimizer/vars"]
    state = {key: float(np.array(values[str(i + 1)])) for i, key in enumerate(STATE_0_2_0)}
    pool = np.array(values[str(len(STATE_0_2_0) + 1)])
    first_slot = len(STATE_0_2_0) + 2
    momentums = [np.array(values[str(first_slot + i)]) for i in range(2 * len(LAYERS))]
    return {
        "iterations": int(np.array(values["0"])),
        "weights": weights,
        "state": state,
        "pool": pool,
        "momentums": momentums,
    }


def loaded_state(model: keras.Model) -> dict:
    """The loaded state, read through the typed state of each part, by the meaning of 0.2.0's fields.

    0.2.0 wrote "unknown" as a number: sigma, start temperature and the start of a rise 0, the
    loss statistics NaN; the named state reads `None` there.
    """
    rate = kac.schedules.find_schedule(model.optimizer).read()
    parts = kac.state.controller_state(model.optimizer)
    sigma, collapse, runaway = (parts[name].read() for name in ("sigma", "collapse", "runaway"))

    def unknown_as(value, sentinel):
        return sentinel if value is None else value

    return {
        "anchor_step": rate.anchor_step,
        "anchor_learning_rate": rate.anchor_learning_rate,
        "drift": rate.drift,
        "min_learning_rate": rate.min_learning_rate,
        "max_learning_rate": rate.max_learning_rate,
        "sigma": unknown_as(sigma.sigma, 0.0),
        "collapses": collapse.collapses,
        "loss_average": unknown_as(collapse.loss_average, math.nan),
        "loss_count": collapse.loss_count,
        "loss_reference": unknown_as(collapse.loss_reference, math.nan),
        "loss_minimum": unknown_as(collapse.loss_minimum, math.nan),
        "rise_learning_rate": unknown_as(runaway.rise_learning_rate, 0.0),
        "rise_z": runaway.rise_z,
        "start_temperature": unknown_as(sigma.start_temperature, 0.0),
        "pool_examples": sigma.pool_examples,
        "pool_batches": sigma.pool_batches,
        "pool_done": int(sigma.pool_done),
        # 0.2.0 kept the automatic ceiling in `max_learning_rate`; now it is the estimator's own field.
        "ceiling": sigma.ceiling,
    }


def pool_counts(model: keras.Model) -> np.ndarray:
    return kac.state.controller_state(model.optimizer)["sigma"].read().pool_counts


def momentums(model: keras.Model) -> list:
    optimizer = model.optimizer
    return [keras.ops.convert_to_numpy(optimizer.momentums[i]) for i in range(len(optimizer.momentums))]


def check_ceiling(state: dict, old: dict) -> None:
    """A ceiling below 100 that 0.2.0 set with an estimated sigma and no collapse was the automatic one."""
    if old["collapses"] == 0 and old["sigma"] > 0 and old["max_learning_rate"] < 100.0:
        assert state["ceiling"] == old["max_learning_rate"]
    else:
        assert state["ceiling"] is None


def check(model: keras.Model, reference: dict) -> None:
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == reference["iterations"]
    for name, (kernel, bias) in reference["weights"].items():
        layer = model.get_layer(name)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), kernel)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.bias), bias)
    state = loaded_state(model)
    for key, value in reference["state"].items():
        np.testing.assert_allclose(state[key], value, rtol=0, atol=0, err_msg=key)
    check_ceiling(state, reference["state"])
    np.testing.assert_array_equal(pool_counts(model), reference["pool"])
    for got, want in zip(momentums(model), reference["momentums"]):
        np.testing.assert_array_equal(got, want)


def test_keras_file_of_0_2_0_loads_with_its_state(fresh_session):
    with zipfile.ZipFile(DATA / "model.keras") as archive:
        reference = read_store(h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r"))
    assert reference["iterations"] > 0 and reference["state"]["sigma"] > 0  # the file holds a trained state
    model = keras.models.load_model(DATA / "model.keras")
    assert isinstance(model, kac.APTModel)
    check(model, reference)
    # And it trains on from there.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kac.ActCooLR(every_step=2)])
    assert np.isfinite(history.history["loss"][-1])


class CaptureAtStart(keras.callbacks.Callback):
    """The model's state at the first batch of `fit`, after `BackupAndRestore` restored it."""

    def __init__(self):
        super().__init__()
        self.state = None

    def on_train_batch_begin(self, batch, logs=None):
        if self.state is None:
            model = self.model
            self.state = {
                "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations)),
                "schedule": loaded_state(model),
                "pool": pool_counts(model),
                "momentums": momentums(model),
                "weights": {n: keras.ops.convert_to_numpy(model.get_layer(n).kernel) for n in LAYERS},
            }


def test_backup_of_0_2_0_restores_its_state(fresh_session, tmp_path):
    backup = tmp_path / "backup"
    shutil.copytree(DATA / "backup", backup)
    with h5py.File(backup / "latest.weights.h5", "r") as store:
        reference = read_store(store)
    assert reference["iterations"] > 0
    model = build_model()
    capture = CaptureAtStart()
    x, y = data()
    model.fit(
        x,
        y,
        batch_size=16,
        epochs=2,
        verbose=0,
        callbacks=[
            kac.ActCooLR(every_step=3, start_temperature=1.5),
            keras.callbacks.BackupAndRestore(str(backup)),
            capture,
        ],
    )
    assert capture.state["iterations"] == reference["iterations"]
    for key, value in reference["state"].items():
        np.testing.assert_array_equal(capture.state["schedule"][key], value, err_msg=key)
    check_ceiling(capture.state["schedule"], reference["state"])
    np.testing.assert_array_equal(capture.state["pool"], reference["pool"])
    for got, want in zip(capture.state["momentums"], reference["momentums"]):
        np.testing.assert_array_equal(got, want)
    for name, (kernel, _) in reference["weights"].items():
        np.testing.assert_array_equal(capture.state["weights"][name], kernel)
