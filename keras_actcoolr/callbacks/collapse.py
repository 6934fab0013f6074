"""`ActCooLR`'s collapse guard: kept states, and bad data, retries and collapses handled from them."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from keras_actcoolr import messages
from keras_actcoolr import temperature as T
from keras_actcoolr.callbacks.guards import dead_layers
from keras_actcoolr.state import StateVariables, register_state, state_field

__all__ = [
    "DEAD_EXAMPLES",
    "HEALTHY_RATE_SLACK",
    "MOSTLY_DEAD",
    "MOSTLY_DEAD_EXAMPLES",
    "CollapseGuard",
    "CollapseState",
    "KeptStates",
    "death_reason",
    "kept_deaths",
    "mostly_died",
]

#: The collapse guard's rules on dead layers (a layer that died since the start of the fit, every
#: layer dead) need a measured batch of at least this many examples.
DEAD_EXAMPLES = 4

#: The collapse guard's rule on a network that mostly died: a layer counts as mostly dead when at
#: least this share of its channels is off at every position of the measured batch, and the rule
#: fires when at least half of the APTReLU layers are mostly dead that had at most half this share
#: dead at the newest healthy kept state (the measurement before).
MOSTLY_DEAD = 0.8

#: The rule on a network that mostly died needs a measured batch of at least this many examples: on
#: a few examples most channels of a narrow layer may be off by chance.
MOSTLY_DEAD_EXAMPLES = 16

#: The collapse guard calls a non-finite loss bad data when the step's rate is at most this
#: multiple of the highest rate that healthy measurements proved since the older kept state.
HEALTHY_RATE_SLACK = 1.25


@register_state("collapse")
@dataclasses.dataclass(frozen=True)
class CollapseState:
    """The collapse guard's state (variables `actcoolr_collapse_<field>`).

    Attributes:
        collapses: Collapses so far (the `collapses` of the logs).
        ceiling: The ceiling a collapse lowered the rate to, or `None`.
        loss_average: The spike test's moving average of the loss, or `None` (not measured).
        loss_count: Measured losses the average took in.
        loss_reference: The first measured loss, or `None`.
        loss_minimum: The lowest average, or `None`.
    """

    collapses: int = state_field("int64", 0)
    ceiling: float | None = state_field("float32", None)
    loss_average: float | None = state_field("float32", None)
    loss_count: int = state_field("int64", 0)
    loss_reference: float | None = state_field("float32", None)
    loss_minimum: float | None = state_field("float32", None)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


class KeptStates:
    """Copies in memory of the weights and optimizer slots that the collapse guard goes back to.

    The state before the fit's first step, one every `every` healthy
    measurements (two kept), and the newest healthy one. Each copy tracks
    the highest rate used since it was taken (`peak`).
    """

    def __init__(self, every: int) -> None:
        self.every = every
        self.model: Any = None
        self.skip: Callable[[], list] = list
        self.clear()

    def clear(self) -> None:
        self.kept: list[dict] = []
        self.latest: dict | None = None
        self.healthy = 0

    def variables(self) -> list:
        optimizer = self.model.optimizer
        skip = {id(v) for v in self.skip()} | {id(optimizer.iterations)}
        return list(self.model.variables) + [v for v in optimizer.variables if id(v) not in skip]

    def keep_initial(self, step: int, rate: float) -> None:
        values = [tf.identity(v.value) for v in self.variables()]
        initial = {"step": step, "learning_rate": rate, "peak": rate, "values": values, "initial": True}
        initial.update(dead=None, shares=None)
        self.kept, self.latest, self.healthy = [initial], initial, 1

    def keep(self, step: int, rate: float, new_rate: float, deaths: dict, suspect: bool) -> None:
        for kept in self.kept:
            kept["peak"] = max(kept["peak"], rate, new_rate)
        if suspect:
            return  # a loss far above its minimum may be the start of a collapse: keep no copy of it
        values = [tf.identity(v.value) for v in self.variables()]
        latest = {"step": step, "learning_rate": new_rate, "peak": new_rate, "values": values, **deaths}
        self.latest = latest  # the newest healthy state, which bad data goes back to
        if self.healthy % self.every == 0:
            self.kept = (self.kept + [latest])[-2:]
        self.healthy += 1

    def restore(self, kept: dict) -> None:
        variables = self.variables()
        if len(variables) != len(kept["values"]):
            raise RuntimeError(
                f"ActCooLR: the kept state holds {len(kept['values'])} variables, the model and optimizer now "
                f"{len(variables)}: variables were created after the state was kept."
            )
        for variable, value in zip(variables, kept["values"]):
            variable.assign(value)
        # The epoch's running loss holds the failure; start it again from the restored state.
        for metric in self.model.metrics:
            metric.reset_state()

    def restart_from(self, kept: dict, rate: float) -> None:
        kept["peak"] = rate
        self.kept, self.latest, self.healthy = [kept], kept, 1


class CollapseGuard:
    """Watches for a failing run and goes back to a kept state.

    A non-finite loss on any step (a measured batch's; between measurements
    Keras' running loss in `logs["loss"]`), a sustained loss spike
    (`temperature.LossSpikeTest` with `tolerance`), a layer frozen dead
    (every channel dead and `T = 0`, alive in the kept state, while the rate
    rose since, or since the start of the fit), or a network that mostly
    died (`mostly_died`: half of the layers with `MOSTLY_DEAD` of their
    channels dead, mostly alive at the newest healthy kept state, the
    measurement before) is handled:

    - a non-finite loss at a rate that healthy measurements proved (at most
      `HEALTHY_RATE_SLACK` times the highest) is **bad data**: the newest
      healthy state is restored, the rate and ceiling stay (`"bad_data"`);
    - any other first failure is **retried**: the older kept state is
      restored and the run restarts at its rate (`"retry"`);
    - a failure within `every` healthy measurements of a retry or of bad
      data, a frozen layer, or a network that mostly died, is a
      **collapse**: the older kept state is restored and the ceiling
      lowered to `backoff` times the highest rate since (`"collapse"`,
      counted in `CollapseState.collapses`).

    Args:
        state: The `StateVariables` of `CollapseState`.
        tolerance: The spike test's `loss_tolerance`.
        backoff: The new ceiling as a share of the highest rate.
        every: Healthy measurements between two kept states.
        minimum: The lowest rate.
    """

    def __init__(self, state: StateVariables, tolerance: float, backoff: float, every: int, minimum: float) -> None:
        self.state = state
        self.backoff = backoff
        self.every = every
        self.minimum = minimum
        self.spike = T.LossSpikeTest(tolerance)
        self.kept = KeptStates(every)
        self.schedule: Any = None
        self.report: Callable[[dict], None] = lambda event: None
        self.start_rate: float | None = None
        self.epoch = 0
        self.begin_fit()

    def bind(self, model: Any, schedule: Any, skip: Callable[[], list], report: Callable[[dict], None]) -> None:
        """The model, the schedule, the variables never kept, and where events go."""
        self.kept.model, self.kept.skip, self.schedule, self.report = model, skip, schedule, report

    def begin_fit(self) -> None:
        self.kept.clear()
        self.retry: dict | None = None
        self.proven: list[float] = []
        self.handled = -1
        self.start_rate = None

    def sync(self) -> None:
        """Read the spike test's statistics from the state (at the first step of a fit)."""
        s = self.state.read()
        self.spike.reset(_nan(s.loss_average), s.loss_count, _nan(s.loss_reference), _nan(s.loss_minimum))

    @property
    def ready(self) -> bool:
        """Whether a state is kept to go back to."""
        return bool(self.kept.kept)

    def keep_initial(self, step: int, rate: float) -> None:
        self.kept.keep_initial(step, rate)

    def set_start_rate(self, step: int, rate: float) -> None:
        """The rate chosen before the first step: the state kept before it goes with it."""
        first = self.kept.kept[0] if self.kept.kept else None
        if first is not None and first.get("initial") and first["step"] == step:
            first["learning_rate"] = first["peak"] = rate

    # ------------------------------------------------------------ a measurement

    def check(self, record: dict, batch: int | None) -> bool:
        """Check a measurement; True if it failed and was handled (the controller then stops there)."""
        first = self.kept.kept[0] if self.kept.kept else None
        if first is not None and first["dead"] is None and first["step"] == record["step"]:
            first.update(kept_deaths(record))  # the measured batch ran on the kept state
        reason = self.reason(record)
        if reason is not None and self.kept.kept:
            if reason.startswith("loss spike"):
                self.failure(record["step"], reason, record["learning_rate"], nonfinite=False, batch=batch)
            else:
                self.collapse(record["step"], reason, record["learning_rate"])
            return True
        self._track_loss(record.get("loss"))
        self._prove_rate(record["step"])
        return False

    def reason(self, record: dict) -> str | None:
        """Why a measurement counts as a failure, or None."""
        loss = record.get("loss")
        if loss is not None:
            if not math.isfinite(loss):
                return "non-finite loss"
            if self.spike.update(loss, record.get("examples")):
                test = self.spike
                return (
                    f"loss spike (batch {loss:.4g}, average {test.average:.4g} above its minimum "
                    f"{test.minimum:.4g} for {test.spiked} measurements)"
                )
        return death_reason(record, self.kept.kept[0] if self.kept.kept else None, self.kept.latest)

    def _track_loss(self, loss: float | None) -> None:
        if loss is None or not math.isfinite(loss):
            return
        test = self.spike
        self.state.write(
            loss_average=test.average, loss_count=test.count, loss_reference=test.reference, loss_minimum=test.minimum
        )

    def _prove_rate(self, step: int) -> None:
        """A healthy measurement at `step` proves the rates of the steps since the last one."""
        rate = self.schedule.read()
        if step > rate.anchor_step and not self.spike.suspect:
            proven = max(self.schedule.value_at(rate.anchor_step, rate), self.schedule.value_at(step - 1, rate))
            self.proven = (self.proven + [proven])[-2 * self.every :]
        if self.retry is not None:
            self.retry["healthy"] += 1
            if self.retry["healthy"] >= self.every:
                self.retry = None  # the retried state went on healthily: the failure is forgotten

    def keep(self, step: int, rate: float, new_rate: float, record: dict) -> None:
        """After the update: keep a copy of the state (see `KeptStates`)."""
        self.kept.keep(step, rate, new_rate, kept_deaths(record), self.spike.suspect)

    # --------------------------------------------------------------- failures

    def failure(self, step: int, reason: str, rate: float, nonfinite: bool, batch: int | None) -> bool:
        """A non-finite loss or a sustained spike: a collapse, bad data or a retry. True if handled."""
        if not self.kept.kept:
            return False
        self.handled = step
        if self.retry is not None:
            earlier = self.retry
            again = f"again {step - earlier['step']} steps after the {earlier['kind']} at step {earlier['step']}"
            self.collapse(step, f"{reason} at {self.where(step, batch)}, {again}", rate)
            return True
        proven = max(self.proven, default=0.0)
        if nonfinite and self.kept.latest is not None and 0.0 < rate <= HEALTHY_RATE_SLACK * proven:
            self._bad_data(step, reason, rate, batch, proven)
        else:
            self._retry_from(step, reason, rate, batch)
        return True

    def where(self, step: int, batch: int | None) -> str:
        return f"step {step}" + ("" if batch is None else f" (batch {batch} of epoch {self.epoch})")

    def _bad_data(self, step: int, reason: str, rate: float, batch: int | None, proven: float) -> None:
        """Undo the steps since the newest kept state; the rate, its ceiling and the schedule stay."""
        kept = self.kept.latest
        self.kept.restore(kept)
        self.retry = {"step": step, "kind": "bad data", "healthy": 0}
        undone = list(range(kept["step"] + 1, step + 1))
        # Batch indices in this epoch of the undone steps (a bad batch can also give a finite loss
        # and NaN weights: its loss shows at the next step).
        batches = [
            b for b in (None if batch is None else batch - (step - s) for s in undone) if b is not None and b >= 0
        ]
        skipped = f"the update of step {step}" + (
            f" and of the {len(undone) - 1} steps before it since the kept state" if len(undone) > 1 else ""
        )
        if batches:
            skipped += f" (batches {batches[0]} to {batches[-1]} of epoch {self.epoch})"
        event = {"step": step, "event": "bad_data", "reason": reason, "epoch": self.epoch, "batch": batch}
        event.update(restored_step=kept["step"], undone_steps=undone, undone_batches=batches, learning_rate=rate)
        event.update(proven_learning_rate=proven, max_learning_rate=self.schedule.read().max_learning_rate)
        self.report(event)
        messages.warn(
            f"ActCooLR: {reason} at {self.where(step, batch)}, at learning rate {rate:.4g}, a rate that "
            f"trained healthily up to {proven:.4g}: bad data (a NaN or infinite input, label or loss), not the "
            f"rate. Restored the state of step {kept['step']}: {skipped} are skipped. The learning rate and its "
            "ceiling are unchanged; check the data (a failure again soon after is taken as the rate's).",
            stacklevel=3,
        )

    def _restart_rate(self, kept: dict, ceiling: float) -> float:
        restart = min(kept["learning_rate"], ceiling)
        if kept.get("initial") and self.start_rate is not None:
            # Back at the start: the run started too high. Fall back to the range analysis' rate.
            restart = max(min(restart, self.start_rate), self.minimum)
        return restart

    def _retry_from(self, step: int, reason: str, rate: float, batch: int | None) -> None:
        """Restore the older kept state and restart at its rate, the ceiling unchanged."""
        kept = self.kept.kept[0]
        self.kept.restore(kept)
        ceiling = self.schedule.read().max_learning_rate
        restart = self._restart_rate(kept, ceiling)
        self._restart(step, kept, restart)
        self.retry = {"step": step, "kind": "retry", "healthy": 0}
        event = {"step": step, "event": "retry", "reason": reason, "epoch": self.epoch, "batch": batch}
        event.update(restored_step=kept["step"], learning_rate=rate, max_learning_rate=ceiling)
        event.update(next_learning_rate=restart)
        self.report(event)
        messages.warn(
            f"ActCooLR: {reason} at {self.where(step, batch)}. Restored the state of step {kept['step']} and "
            f"retry at its learning rate {restart:.4g}, the ceiling unchanged; a failure again within "
            f"{self.every} healthy measurements lowers the ceiling.",
            stacklevel=3,
        )

    def collapse(self, step: int, reason: str, rate: float) -> None:
        """Restore the older kept state, lower the ceiling and restart below it."""
        kept = self.kept.kept[0]
        self.kept.restore(kept)
        in_force = self.schedule.read().max_learning_rate
        ceiling = max(min(in_force, self.backoff * max(kept["peak"], rate)), self.minimum)
        restart = self._restart_rate(kept, ceiling)
        self.state.write(ceiling=ceiling, collapses=self.state.read().collapses + 1)
        self._restart(step, kept, restart, ceiling)
        self.retry = None
        self.proven = []
        event = {"step": step, "event": "collapse", "reason": reason, "restored_step": kept["step"]}
        event.update(learning_rate=rate, max_learning_rate=ceiling, next_learning_rate=restart)
        self.report(event)
        messages.warn(
            f"ActCooLR: {reason} at step {step}. Restored the state of step {kept['step']}, "
            f"lowered the maximum learning rate to {ceiling:.4g} and restarted at {restart:.4g}.",
            stacklevel=3,
        )

    def _restart(self, step: int, kept: dict, restart: float, ceiling: float | None = None) -> None:
        """The state after a restore: a new anchor, the recent losses forgotten (reference and minimum kept)."""
        test = self.spike
        test.reset(math.nan, test.warmup if math.isfinite(test.minimum) else 0, test.reference, test.minimum)
        rate = {"anchor_step": step + 1, "anchor_learning_rate": restart, "drift": 0.0}
        if ceiling is not None:
            rate["max_learning_rate"] = ceiling
        self.schedule.assign(**rate)
        self.state.write(loss_average=None, loss_count=test.count)
        self.state.write(loss_reference=_none(test.reference), loss_minimum=_none(test.minimum))
        self.kept.restart_from(kept, restart)


def kept_deaths(record: dict) -> dict:
    """What a kept state remembers of its measured batch: `dead`, the layers with every channel dead, and
    `shares`, each layer's share of dead channels (the layer rules of `death_reason` compare with them)."""
    return {"dead": set(dead_layers(record)), "shares": dict(record.get("dead", {}))}


def death_reason(record: dict, kept: dict | None, latest: dict | None = None) -> str | None:
    """Why a measurement shows the network dying (`CollapseGuard`'s layer rules), or None.

    The frozen-layer rules compare with the `kept` state (the older kept
    one), the mostly-died rule with the `latest` (the newest healthy one,
    kept at the measurement before): a network that mostly died between two
    measurements.
    """
    if kept is None:
        return None
    # On a batch of a few examples a layer may well be off for all of them: no sign of death.
    examples = record.get("examples", DEAD_EXAMPLES) >= DEAD_EXAMPLES
    dead = dead_layers(record) if examples else []
    if dead and len(dead) == len(record["layers"]) and kept["dead"] is not None and len(kept["dead"]) < len(dead):
        return "every APTReLU layer died (no channel on in the measured batch)"
    if kept["dead"] is not None and kept.get("initial"):
        # Died since the start of the fit (the kept state): a first rate far too high.
        frozen = [n for n in dead if record["layers"][n] == 0.0 and n not in kept["dead"]]
        if frozen:
            return f"layer {frozen[0]!r} died since the start of the fit (every channel dead, T = 0)"
    enough = record.get("examples", MOSTLY_DEAD_EXAMPLES) >= MOSTLY_DEAD_EXAMPLES
    before = latest.get("shares") if latest is not None and enough else None
    died = mostly_died(record, before) if before is not None else []
    if died:
        share = record["dead"][died[0]]
        return (
            f"{len(died)} of {len(record['layers'])} APTReLU layers mostly died since step {latest['step']} "
            f"({died[0]!r}: {share:.0%} of its channels dead, {before[died[0]]:.0%} then)"
        )
    if record["learning_rate"] > kept["learning_rate"]:
        # Died since the kept state, while the rate rose: frozen, not cold.
        frozen = [n for n in dead_layers(record) if record["layers"][n] == 0.0 and n not in (kept["dead"] or set())]
        if frozen:
            return f"frozen layer {frozen[0]!r} (every channel dead, T = 0) while the rate rose"
    return None


def mostly_died(record: dict, before: dict) -> list[str]:
    """Names of the layers of `record` that mostly died since `before`, if at least half of its layers did.

    A layer mostly died when at least `MOSTLY_DEAD` of its channels are dead
    in `record["dead"]` and at most half that share was in `before` (the
    dead shares of the measurement before). One layer that mostly dies may
    be pruning itself, and small layers lose channels step by step as they
    train; half of the network doing so between two measurements is a step
    that pushed most pre-activations below zero, and a network in that
    state sits at chance with a temperature near 0.
    """
    shares = record.get("dead", {})
    died = [n for n in record["layers"] if shares.get(n, 0.0) >= MOSTLY_DEAD and before.get(n, 1.0) <= MOSTLY_DEAD / 2]
    return died if died and 2 * len(died) >= len(record["layers"]) else []


def _none(value: float) -> float | None:
    return None if math.isnan(value) else value
