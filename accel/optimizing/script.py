"""`accel optimize SCRIPT`: tune the DataLoader settings of a plain training script, unchanged.

Each trial is one run of the script under one setting (accel.optimizing.script_trial). The
as-written setting and the candidates (num_workers 0..usable cores, pinned memory where CUDA is)
run in interleaved rounds (forward, then backward: A B C, C B A, ...), at least MIN_ROUNDS each,
at one torch thread count. What is compared is seconds per sample over a pass as long as the
script's first one, its one-time costs included (worker start-up, shutdown), so a setting whose
start-up eats its steady gain on short epochs is not kept. A candidate is kept when the 95%
interval of its speedup (ratio of medians, whole rounds resampled: accel.core.stats.paired_ratio_ci)
lies above the recipe's keep.min_speedup, and the batches it yields are the script's own: the
digests of the first batches of each pass must match the as-written run's (a Dataset that draws
from the global RNG in __getitem__ gives other samples in worker processes).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from accel.core.errors import AccelError
from accel.core.loading import Script
from accel.core.machine import usable_cores
from accel.core.measure import now, thread_count
from accel.core.stats import paired_ratio_ci
from accel.optimizing.lock import LOCK_NAME, SCRIPT_LOCK, Lock, LockEntry, current_versions, file_sha256, write_lock
from accel.optimizing.optimizers.loader_tune import Setting
from accel.optimizing.recipes.schema import Recipe
from accel.optimizing.script_loader import SCRIPT_LOADER_ENTRY
from accel.optimizing.script_trial import MIN_STEADY_BATCHES, Trial, batches_differ, run_trial

OPTIMIZE_SCRIPT_SCHEMA = "accel.optimize/1"
# Fewer rounds than this cannot put a 95% interval on a ratio of medians.
MIN_ROUNDS = 3
MAX_ROUNDS = 7
# A trial's loop is never cut shorter than this, whatever the budget: start-up alone can take a
# second; nor shorter than MIN_TRIAL_BATCHES batches at the as-written rate (a median needs a few).
MIN_LOOP_SECONDS = 3.0
MIN_TRIAL_BATCHES = 8
ACCEPTED, REVERTED, FAILED = "accepted", "reverted", "failed"

Progress = Callable[[str], None]


def candidates(start: dict[str, Any], cores: int) -> list[Setting]:
    """num_workers 0..cores (pinned memory where CUDA is), less the script's own setting."""
    pin = torch.cuda.is_available()
    own = Setting(
        int(start.get("num_workers") or 0),
        start.get("prefetch_factor"),
        bool(start.get("persistent_workers")),
        bool(start.get("pin_memory")),
    )
    return [s for s in (Setting(w, None, False, pin) for w in range(cores + 1)) if s != own]


def label(setting: Setting | None, asked: dict[str, Any]) -> str:
    if setting is None:
        return f"as written (num_workers={asked.get('num_workers', 0)})"
    return setting.label()


@dataclasses.dataclass(frozen=True)
class ScriptOptimizeResult:
    name: str
    recipe: str
    threads: int
    cores: int
    steps: tuple[dict[str, Any], ...]
    chosen: Setting | None
    baseline_samples_per_s: float | None
    final_samples_per_s: float | None
    speedup: float
    speedup_ci: tuple[float, float]
    message: str
    rounds: int
    elapsed_seconds: float
    lock_path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": OPTIMIZE_SCRIPT_SCHEMA,
            "mode": "script",
            "target": self.name,
            "recipe": self.recipe,
            "objective": "throughput",
            "threads": self.threads,
            "cores": self.cores,
            "rounds": self.rounds,
            "baseline": {"samples_per_s": self.baseline_samples_per_s},
            "final": {"samples_per_s": self.final_samples_per_s},
            "speedup": self.speedup,
            "speedup_ci": list(self.speedup_ci),
            "message": self.message,
            "kept": [SCRIPT_LOADER_ENTRY] if self.chosen else [],
            "chosen": dataclasses.asdict(self.chosen) if self.chosen else None,
            "steps": list(self.steps),
            "lock_path": str(self.lock_path) if self.lock_path else None,
            "elapsed_seconds": self.elapsed_seconds,
        }


def _step(setting: Setting, verdict: str, reason: str, **fields: Any) -> dict[str, Any]:
    return {
        "optimizer": setting.label(),
        "params": dataclasses.asdict(setting),
        "verdict": verdict,
        "reason": reason,
        "speedup": fields.get("speedup"),
        "speedup_ci": fields.get("speedup_ci"),
        "fidelity": fields.get("fidelity"),
        "setup_seconds": fields.get("startup_seconds", 0.0),
        "first_call_seconds": None,
        "notes": fields.get("notes", {}),
    }


def optimize_script(
    script: Script,
    recipe: Recipe,
    *,
    out_dir: str | os.PathLike | None = None,
    budget_seconds: float | None = None,
    threads: int | None = None,
    progress: Progress = lambda message: None,
) -> ScriptOptimizeResult:
    """Search the DataLoader settings of the loaders the script builds; with `out_dir`, write the lock."""
    budget = float(budget_seconds if budget_seconds is not None else recipe.budget_seconds)
    began = now()
    with thread_count(threads) as n_threads:
        progress(f"running {script.path.name} as written")
        reference = run_trial(script, None)
        cores = usable_cores()
        asked = reference.loaders[0].asked if reference.loaders else {}
        steps: list[dict[str, Any]] = []
        chosen, rounds, base_rate = None, 0, None
        speedup, ci = 1.0, (1.0, 1.0)
        if not reference.loaders or reference.samples == 0:
            message = "no loader to tune: the script took no batch from a DataLoader"
        elif reference.seconds_per_sample is None:
            message = f"no loader to tune: the script's loop ran fewer than {MIN_STEADY_BATCHES + 1} batches per pass"
        else:
            settings: list[Setting | None] = [None, *candidates(asked, cores)]
            spent = now() - began
            per_round = reference.run_seconds * len(settings)
            rounds = int(min(MAX_ROUNDS, max(MIN_ROUNDS, (budget - spent) // max(per_round, 1e-9))))
            share = (budget - spent) / (rounds * len(settings)) - reference.setup_seconds
            loop_seconds = max(MIN_LOOP_SECONDS, share, MIN_TRIAL_BATCHES * reference.batch_seconds)
            trials, failed = measure_settings(script, settings, rounds, loop_seconds, asked, progress)
            steps = judge(settings, trials, failed, reference, recipe.keep.min_speedup, label(None, asked))
            base = [r for t in trials[0] if (r := t.pass_seconds_per_sample(reference.first_pass_batches))]
            base_rate = 1.0 / float(np.median(base)) if base else None
            best = next((step for step in steps if step["verdict"] == ACCEPTED), None)
            if best is not None:
                chosen = Setting(**best["params"])
                speedup, ci = best["speedup"], (best["speedup_ci"][0], best["speedup_ci"][1])
            message = (
                f"kept {chosen.label()}: {speedup:.2f}x samples/s over {label(None, asked)}, same batches"
                if chosen
                else f"nothing kept: {label(None, asked)} stays (no setting was faster beyond noise "
                "with the same batches)"
            )
    lock_path = _write_lock(script, recipe, out_dir, chosen, speedup, n_threads) if out_dir is not None else None
    return ScriptOptimizeResult(
        name=script.path.stem,
        recipe=recipe.name,
        threads=n_threads,
        cores=cores,
        steps=tuple(steps),
        chosen=chosen,
        baseline_samples_per_s=base_rate,
        final_samples_per_s=base_rate * speedup if base_rate is not None else None,
        speedup=speedup,
        speedup_ci=ci,
        message=message,
        rounds=rounds,
        elapsed_seconds=now() - began,
        lock_path=lock_path,
    )


def measure_settings(
    script: Script,
    settings: list[Setting | None],
    rounds: int,
    loop_seconds: float,
    asked: dict[str, Any],
    progress: Progress,
) -> tuple[list[list[Trial]], dict[int, str]]:
    """Trials of each setting in interleaved rounds (forward, then backward), and why any failed."""
    trials: list[list[Trial]] = [[] for _ in settings]
    failed: dict[int, str] = {}
    for r in range(rounds):
        order = range(len(settings)) if r % 2 == 0 else reversed(range(len(settings)))
        for i in order:
            if i in failed:
                continue
            progress(f"round {r + 1}/{rounds}: {label(settings[i], asked)}")
            try:
                trials[i].append(run_trial(script, settings[i], loop_seconds=loop_seconds))
            except AccelError as exc:
                if i == 0:  # the script fails as written: nothing to compare against
                    raise
                failed[i] = exc.message
    return trials, failed


def judge(
    settings: list[Setting | None],
    trials: list[list[Trial]],
    failed: dict[int, str],
    reference: Trial,
    min_speedup: float,
    base_label: str,
) -> list[dict[str, Any]]:
    """One step per candidate (settings[1:]) against the as-written settings[0]; at most one is
    accepted, the fastest of those faster beyond `min_speedup` with the same batches. Pure."""
    batches = reference.first_pass_batches
    base = [t.pass_seconds_per_sample(batches) for t in trials[0]]
    own_differs = next((d for t in trials[0] if (d := batches_differ(reference, t))), None)
    steps = []
    for i, setting in enumerate(settings[1:], start=1):
        if setting is None:
            continue
        if i in failed:
            steps.append(_step(setting, FAILED, f"the script failed with it: {failed[i]}"))
            continue
        startup = float(np.median([t.startup_seconds / max(t.passes, 1) for t in trials[i]])) if trials[i] else 0.0
        pairs = [(b, c) for b, t in zip(base, trials[i]) if b and (c := t.pass_seconds_per_sample(batches))]
        if len(pairs) < MIN_ROUNDS:
            reason = f"fewer than {MIN_ROUNDS} rounds gave a steady-state rate"
            steps.append(_step(setting, REVERTED, reason, startup_seconds=startup))
            continue
        speedup, ci = paired_ratio_ci([b for b, _ in pairs], [c for _, c in pairs])
        rates = {"as_written_samples_per_s": [1 / b for b, _ in pairs], "samples_per_s": [1 / c for _, c in pairs]}
        fields = {"speedup": speedup, "speedup_ci": list(ci), "startup_seconds": startup, "notes": rates}
        differs = next((d for t in trials[i] if (d := batches_differ(reference, t))), None)
        if own_differs:
            reason = (
                f"the script's own batches change from run to run ({own_differs}): seed its randomness "
                "so accel can check that a setting keeps them"
            )
            steps.append(_step(setting, REVERTED, reason, fidelity={"batches": "not comparable"}, **fields))
        elif differs:
            reason = (
                f"the batches differ from the script's own ({differs}): its Dataset likely draws from a "
                "global RNG, which each worker process seeds apart"
            )
            steps.append(_step(setting, REVERTED, reason, fidelity={"batches": "batches differ"}, **fields))
        elif ci[0] <= min_speedup:
            reason = f"not faster beyond noise: its interval reaches {ci[0]:.2f}x, keeping needs > {min_speedup:.2f}x"
            steps.append(_step(setting, REVERTED, reason, fidelity={"batches": "same batches"}, **fields))
        else:
            reason = f"faster than {base_label} beyond noise, same batches"
            steps.append(_step(setting, ACCEPTED, reason, fidelity={"batches": "same batches"}, **fields))
    accepted = [step for step in steps if step["verdict"] == ACCEPTED]
    best = max(accepted, key=lambda step: step["speedup"]) if accepted else None
    for step in accepted:
        if step is not best and best is not None:
            step["verdict"] = REVERTED
            step["reason"] = f"faster, but {best['optimizer']} was more so ({best['speedup']:.2f}x)"
    return steps


def _write_lock(
    script: Script, recipe: Recipe, out_dir: str | os.PathLike, chosen: Setting | None, speedup: float, threads: int
) -> Path:
    # The thread count is part of what was measured: workers and intra-op threads share the cores.
    entries = (LockEntry(SCRIPT_LOADER_ENTRY, {"threads": threads}, dataclasses.asdict(chosen)),) if chosen else ()
    lock = Lock(
        pipeline_file=script.path.name,
        pipeline_sha256=file_sha256(script.path),
        pipeline_path=str(script.path.resolve()),
        entries=entries,
        recipe=recipe.name,
        target="throughput",
        speedup=round(speedup, 4),
        versions=current_versions(),
        min_speedup=recipe.keep.min_speedup,
        kind=SCRIPT_LOCK,
    )
    return write_lock(Path(out_dir) / LOCK_NAME, lock)
