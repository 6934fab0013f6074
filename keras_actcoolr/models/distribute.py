"""The `tf.distribute` strategies a measured step runs under, and step outputs Keras can reduce."""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

__all__ = ["SUPPORTED_STRATEGIES", "check_strategy", "is_multi_worker", "reducible"]

SUPPORTED_STRATEGIES = (
    tf.distribute.OneDeviceStrategy,
    tf.distribute.MirroredStrategy,
    tf.distribute.MultiWorkerMirroredStrategy,
)


def check_strategy(strategy: Any) -> None:
    """Refuse the `tf.distribute` strategies that measured steps do not run under.

    Raises:
        ValueError: for a strategy other than none (TensorFlow's default),
            `OneDeviceStrategy`, `MirroredStrategy` and
            `MultiWorkerMirroredStrategy`.
    """
    if isinstance(strategy, SUPPORTED_STRATEGIES):
        return
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return  # TensorFlow's default strategy: no distribution.
    raise ValueError(
        "APTModel measures under no tf.distribute strategy, tf.distribute.OneDeviceStrategy, "
        "tf.distribute.MirroredStrategy (one machine) or tf.distribute.MultiWorkerMirroredStrategy "
        "(several machines), and under no other: Keras 3's fit does not drive ParameterServerStrategy, "
        "and TPUStrategy and CentralStorageStrategy are not supported. Build and compile the model in the "
        f"scope of a supported strategy. Received: distribute_strategy={type(strategy).__name__}"
    )


def is_multi_worker(strategy: Any) -> bool:
    """Whether `strategy` is a MultiWorkerMirroredStrategy over more than one worker."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
    )


def reducible(strategy: Any, logs: dict) -> dict:
    """Step outputs that Keras 3 can reduce over the replicas of `strategy`.

    Over several workers, Keras reduces every output with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars and would
    average the per-layer counts over the layers. A leading axis of length 1
    makes it the mean over replicas: the metrics' usual mean, and for the
    counts, already summed over replicas, an exact no-op.
    """
    if not is_multi_worker(strategy):
        return logs
    return keras.tree.map_structure(lambda value: tf.expand_dims(value, 0), logs)


def first_replica_batch(strategy: Any, batch: Any) -> Any:
    """This worker's first replica's part of a distributed batch (shapes for a symbolic build)."""
    return keras.tree.map_structure(lambda v: strategy.experimental_local_results(v)[0], batch)
