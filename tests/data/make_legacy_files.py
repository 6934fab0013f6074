"""Write the files that `tests/test_legacy_files.py` loads: saved by an earlier version.

Run from the repository root at the commit the files belong to (here ddb44d7, release 0.2.0):

    python tests/data/make_legacy_files.py tests/data/release_0_2_0

It trains the small network of `build_model` for 12 steps with `ActCooLR` (sigma estimated,
so that the pooled range-analysis counts are in the state), then writes

- `model.keras`: `model.save`, the whole model with its optimizer and controller state;
- `backup/`: what `keras.callbacks.BackupAndRestore` keeps after the interrupted run
  (its weights file and its training metadata), the run stopped at step 9;
- `release.txt`: the version that wrote them.

The tests read the weight files with h5py as the reference, independently of Keras' loading.
"""

import shutil
import sys
from pathlib import Path

import keras
import numpy as np

import keras_actcoolr as kac


def build_model():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((10,))
    h = keras.layers.Dense(24, activation="relu", name="d1")(inputs)
    h = keras.layers.Dense(16, activation="relu", name="d2")(h)
    model = kac.convert(keras.Model(inputs, keras.layers.Dense(3, name="out")(h), name="net"))
    model.compile(
        optimizer=keras.optimizers.SGD(kac.ActCooLRSchedule(0.1), momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(192, 10)).astype("float32")
    return x, (x[:, :3].sum(-1) > 0).astype("int64") + (x[:, 3] > 1)


class StopAt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.step:
            raise KeyboardInterrupt


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    x, y = data()
    model = build_model()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[kac.ActCooLR(every_step=3, start_temperature=1.5)])
    model.save(out / "model.keras")

    backup = out / "backup"
    shutil.rmtree(backup, ignore_errors=True)
    model = build_model()
    callbacks = [
        kac.ActCooLR(every_step=3, start_temperature=1.5),
        keras.callbacks.BackupAndRestore(str(backup), save_freq=3, delete_checkpoint=False),
        StopAt(9),
    ]
    try:
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=callbacks)
    except KeyboardInterrupt:
        pass
    (out / "release.txt").write_text(f"keras_actcoolr {kac.__version__}, keras {keras.__version__}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
