"""Time and memory of the first `fit` of a real network: plain Keras, `TemperatureLogger`, `ActCooLR`.

    python benchmarks/startup.py                                  # MobileNetV2 and ResNet50V2, once
    python benchmarks/startup.py --networks mobilenetv2 --repeats 3

For each network (`keras.applications`, `weights=None`, 32x32x3 inputs, 10
classes) and each repeat, three configurations run back to back, each in a
fresh Python process so that no traced function or graph cache carries over:

- `plain`: the Keras model, SGD (momentum 0.9);
- `logger`: the model converted by `keras_actcoolr.convert`, SGD on a constant
  rate, `TemperatureLogger(every_step=1)`: every step measured;
- `actcoolr`: the converted model, SGD on an `ActCooLRSchedule`,
  `ActCooLR(every_step=1)` with `sigma` estimated by the range analysis of the
  first step (25 learning rates).

Each process builds the model, compiles it and times its first `model.fit`
(`--steps` steps of `--batch-size` random images, `verbose=0`): tracing,
graph optimisation and the steps themselves, in wall-clock time and in CPU
time of the process (all threads, `time.process_time`). The peak resident
memory is the child's `ru_maxrss` as the parent reaps it (`os.wait4`), the
whole life of the process. The table gives the medians over repeats and the
ratios `actcoolr / logger` and `logger / plain` of the same repeat (then
their medians). Targets: `actcoolr / logger <= 1.25` and `logger / plain <= 2`
in time, `actcoolr / logger <= 1.5` in peak memory; "(over)" marks a ratio
above its target.

Wall-clock times on a machine that other processes share vary with their
load: the three configurations of a repeat run one after the other so that
they see about the same load, the load average is printed before and after,
and the CPU times, which the load changes much less, are given beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

NETWORKS = {"mobilenetv2": "MobileNetV2", "resnet50v2": "ResNet50V2"}
CONFIGS = ("plain", "logger", "actcoolr")
TARGETS = {"time actcoolr/logger": 1.25, "time logger/plain": 2.0, "memory actcoolr/logger": 1.5}


def child(network: str, config: str, steps: int, batch_size: int) -> dict:
    """Build, compile and time the first `fit` of one configuration, in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    import keras_actcoolr as kac

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, len(x))
    model = getattr(keras.applications, NETWORKS[network])(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    callbacks = []
    rate = 0.01
    if config == "plain":
        optimizer = keras.optimizers.SGD(rate, momentum=0.9)
    else:
        model = kac.convert(model)
        if config == "logger":
            optimizer = keras.optimizers.SGD(rate, momentum=0.9)
            callbacks = [kac.TemperatureLogger(every_step=1)]
        else:
            optimizer = keras.optimizers.SGD(kac.ActCooLRSchedule(rate), momentum=0.9)
            callbacks = [kac.ActCooLR(every_step=1)]
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    result = {"network": network, "config": config, "fit_seconds": seconds, "fit_cpu_seconds": cpu_seconds}
    if config != "plain":
        history = callbacks[0].history
        result["measurements"] = len(history)
        result["temperature"] = history[-1]["temperature"]
        if config == "actcoolr":
            result["sigma"] = history[0]["sigma"]
    return result


def run_child(network: str, config: str, args: argparse.Namespace) -> dict:
    """Run one configuration in a fresh process; its result with `peak_mb` from the reaped rusage."""
    argv = [sys.executable, os.path.abspath(__file__), "--child", network, config]
    argv += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{network}/{config} failed:\n{err.read()[-4000:]}")
        result = json.loads(out.read().strip().splitlines()[-1])
    result["process_seconds"] = wall
    result["peak_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    return result


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    for network in dict.fromkeys(r["network"] for r in runs):
        mine = [r for r in runs if r["network"] == network]
        repeats = sorted({r["repeat"] for r in mine})
        by = {(r["repeat"], r["config"]): r for r in mine}

        def median(config: str, key: str) -> float:
            return statistics.median(by[(i, config)][key] for i in repeats)

        def ratio(key: str, top: str, bottom: str) -> float:
            return statistics.median(by[(i, top)][key] / by[(i, bottom)][key] for i in repeats)

        rows.append(
            {
                "network": network,
                "repeats": len(repeats),
                **{f"{config} s": median(config, "fit_seconds") for config in CONFIGS},
                **{f"{config} MB": median(config, "peak_mb") for config in CONFIGS},
                **{f"{config} cpu s": median(config, "fit_cpu_seconds") for config in CONFIGS},
                "time actcoolr/logger": ratio("fit_seconds", "actcoolr", "logger"),
                "time logger/plain": ratio("fit_seconds", "logger", "plain"),
                "cpu actcoolr/logger": ratio("fit_cpu_seconds", "actcoolr", "logger"),
                "cpu logger/plain": ratio("fit_cpu_seconds", "logger", "plain"),
                "memory actcoolr/logger": ratio("peak_mb", "actcoolr", "logger"),
                "sigma": statistics.median(by[(i, "actcoolr")]["sigma"] for i in repeats),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| network | first fit: plain | logger | actcoolr | actcoolr / logger | logger / plain "
        "| CPU: actcoolr / logger | logger / plain | peak RSS: plain | logger | actcoolr | actcoolr / logger |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:

        def mark(key: str, bound: float | None = None) -> str:
            bound = TARGETS.get(key, bound)
            return f"{row[key]:.2f}" + (" (over)" if row[key] > bound else "")

        lines.append(
            f"| {NETWORKS[row['network']]} | {row['plain s']:.1f} s | {row['logger s']:.1f} s "
            f"| {row['actcoolr s']:.1f} s | {mark('time actcoolr/logger')} | {mark('time logger/plain')} "
            f"| {mark('cpu actcoolr/logger', TARGETS['time actcoolr/logger'])} "
            f"| {mark('cpu logger/plain', TARGETS['time logger/plain'])} "
            f"| {row['plain MB']:.0f} MB | {row['logger MB']:.0f} MB | {row['actcoolr MB']:.0f} MB "
            f"| {mark('memory actcoolr/logger')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the three configurations")
    parser.add_argument("--steps", type=int, default=3, help="steps of the timed fit")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--output", help="write every run and the summary to this JSON file")
    parser.add_argument("--child", nargs=2, metavar=("NETWORK", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.steps, args.batch_size)))
        return []
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1. Received: repeats={args.repeats}")

    import keras
    import tensorflow as tf

    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")
    print(
        f"python {platform.python_version()}, tensorflow {tf.__version__}, keras {keras.__version__}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}, TF_ENABLE_ONEDNN_OPTS={onednn}"
    )
    print(f"load average before: {os.getloadavg()}")
    runs = []
    for network in args.networks:
        for repeat in range(args.repeats):
            for config in CONFIGS:
                result = run_child(network, config, args)
                result["repeat"] = repeat
                runs.append(result)
                extra = f", sigma {result['sigma']:.3f}" if "sigma" in result else ""
                print(
                    f"  {network} #{repeat} {config:8s} first fit {result['fit_seconds']:7.1f} s "
                    f"(CPU {result['fit_cpu_seconds']:7.1f} s), "
                    f"process {result['process_seconds']:7.1f} s, peak RSS {result['peak_mb']:7.0f} MB{extra}",
                    flush=True,
                )
    print(f"load average after: {os.getloadavg()}")
    rows = summarize(runs)
    print(f"\nbatch {args.batch_size}, {args.steps} steps, medians over {args.repeats} repeat(s)\n")
    print(table(rows))
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"runs": runs, "summary": rows}, file, indent=1)
    return rows


if __name__ == "__main__":
    main()
