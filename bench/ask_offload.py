"""What a GP ask costs its neighbours in one process, and with the ask in a worker.

The operator passes over every study in threads of one process. This measures the
latency of small TPE asks (a neighbour study's pass) in one thread while another
thread asks a 400-trial GP study without pause: once with the GP asking in-process
(as before the ask worker), once through the operator's AskWorker. Rounds alternate
between the two modes, so a shared machine's changing load hits both alike. No
cluster: only the sampling half of a pass. Run: `python -m bench.ask_offload`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import FloatDistribution

from rheostat.backends.kubernetes.ask_worker import AskWorker
from rheostat.sampling import make_sampler
from rheostat.space import SearchSpace
from rheostat.spec import AlgorithmSpec

SPACE = SearchSpace({f"x{i}": FloatDistribution(-5.0, 5.0) for i in range(3)})
GP = AlgorithmSpec(name="bayesian", seed=1)
TPE = AlgorithmSpec(name="tpe", seed=2)


def _value(params: dict[str, Any]) -> float:
    return float(sum((v - 1.0) ** 2 for v in params.values()))


def _gp_study(trials: int) -> optuna.Study:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(trials):
        trial = study.ask(SPACE.distributions)
        study.tell(trial, _value(trial.params))
    study.sampler = make_sampler(GP, SPACE)
    return study


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _round(gp: optuna.Study, seconds: float) -> dict[str, Any]:
    """TPE ask latencies while a thread asks the GP study until `seconds` pass."""
    stop = threading.Event()
    gp_asks = 0

    def ask_gp() -> None:
        nonlocal gp_asks
        while not stop.is_set():
            trial = gp.ask(SPACE.distributions)
            gp.tell(trial, state=optuna.trial.TrialState.FAIL)  # the history stays 400
            gp_asks += 1

    tpe = optuna.create_study(sampler=make_sampler(TPE, SPACE))
    for _ in range(10):
        trial = tpe.ask(SPACE.distributions)
        tpe.tell(trial, _value(trial.params))
    thread = threading.Thread(target=ask_gp, daemon=True)
    thread.start()
    latencies = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        trial = tpe.ask(SPACE.distributions)
        latencies.append(time.perf_counter() - started)
        tpe.tell(trial, _value(trial.params))
        stop.wait(0.05)  # a pass now and then, not a busy loop
    stop.set()
    thread.join()
    return {"latencies": latencies, "gpAsks": gp_asks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of a round")
    parser.add_argument("--trials", type=int, default=400, help="the GP study's history")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    worker = AskWorker(timeout=600.0)
    offloaded = _gp_study(args.trials)
    worker.offload(offloaded, GP, SPACE)
    offloaded.ask(SPACE.distributions)  # start the worker before timing anything
    inline = _gp_study(args.trials)
    found: dict[str, dict[str, list[float]]] = {
        m: {"latencies": [], "gpAsks": [], "load": []} for m in ("in-process", "worker")
    }
    try:
        for _ in range(args.rounds):
            for mode, study in (("in-process", inline), ("worker", offloaded)):
                result = _round(study, args.seconds)
                found[mode]["latencies"] += result["latencies"]
                found[mode]["gpAsks"].append(result["gpAsks"])
                found[mode]["load"].append(os.getloadavg()[0])
    finally:
        worker.shutdown()
    rows = {}
    for mode, data in found.items():
        lat = data["latencies"]
        rows[mode] = {
            "tpeAsks": len(lat),
            "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * _percentile(lat, 0.99), 1),
            "max_ms": round(1000 * max(lat), 1),
            "gpAsksPerSecond": round(sum(data["gpAsks"]) / (args.rounds * args.seconds), 2),
            "loadAverage1m": [round(x, 2) for x in data["load"]],
        }
    document = {"gpTrials": args.trials, "roundSeconds": args.seconds, "modes": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ask_offload.json").write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
