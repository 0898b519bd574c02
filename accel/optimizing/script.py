"""`accel optimize SCRIPT`: tune the DataLoader settings of a plain training script, unchanged.

Each trial is one run of the script under one setting (accel.optimizing.script_trial). The
as-written setting and the candidates (num_workers 0..usable cores, pinned memory where CUDA is)
run in interleaved rounds (forward, then backward: A B C, C B A, ...), at least MIN_ROUNDS each.
Workers and the main process's intra-op threads share the cores: a setting with W workers is also
tried with the main process at cores - W torch threads (never more than the script's own count),
since OpenMP threads that spin between steps take the cores the workers need (on 2 cores, 2
workers beside 2 threads gained 1.05x on the corpus script, beside 1 thread 1.65x). What is
compared is seconds per sample over a pass as long as the script's first one, its one-time costs
included (worker start-up, shutdown), so a setting whose start-up eats its steady gain on short
epochs is not kept. A candidate is kept when the 95%
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


@dataclasses.dataclass(frozen=True)
class ScriptSetting:
    """One point of the search: a DataLoader setting (None: what the script passed) and the torch
    intra-op thread count of the script's own process."""

    loader: Setting | None
    threads: int

    def params(self) -> dict[str, Any]:
        return {**(dataclasses.asdict(self.loader) if self.loader else {}), "threads": self.threads}


def own_setting(asked: dict[str, Any]) -> Setting:
    """What the script passed to its DataLoader, as a Setting."""
    return Setting(
        int(asked.get("num_workers") or 0),
        asked.get("prefetch_factor"),
        bool(asked.get("persistent_workers")),
        bool(asked.get("pin_memory")),
    )


def candidates(start: dict[str, Any], cores: int, threads: int) -> list[ScriptSetting]:
    """num_workers 0..cores (pinned memory where CUDA is) at the script's `threads`, and each
    setting with workers (the script's own too) at cores - workers threads where that is fewer;
    less the script's own setting at its own thread count."""
    pin = torch.cuda.is_available()
    own = own_setting(start)
    loaders = [Setting(w, None, False, pin) for w in range(cores + 1)]
    found: list[ScriptSetting] = []
    for loader in loaders + ([own] if own.num_workers and own not in loaders else []):
        counts = [threads] + ([max(1, cores - loader.num_workers)] if loader.num_workers else [])
        for count in counts:
            setting = ScriptSetting(loader, count)
            if count <= threads and setting not in found and not (loader == own and count == threads):
                found.append(setting)
    return found


def label(setting: ScriptSetting | None, asked: dict[str, Any], threads: int) -> str:
    """'as written (num_workers=0)', 'num_workers=2', 'num_workers=2, threads=1' (threads named when
    they differ from the script's own `threads`)."""
    if setting is None or setting.loader is None:
        text = f"as written (num_workers={asked.get('num_workers', 0)})"
    else:
        text = setting.loader.label()
    if setting is not None and setting.threads != threads:
        text += f", threads={setting.threads}"
    return text


@dataclasses.dataclass(frozen=True)
class ScriptOptimizeResult:
    name: str
    recipe: str
    threads: int
    cores: int
    steps: tuple[dict[str, Any], ...]
    chosen: Setting | None
    chosen_threads: int | None
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
            "chosen_threads": self.chosen_threads,
            "steps": list(self.steps),
            "lock_path": str(self.lock_path) if self.lock_path else None,
            "elapsed_seconds": self.elapsed_seconds,
        }


def _step(setting: ScriptSetting, name: str, verdict: str, reason: str, **fields: Any) -> dict[str, Any]:
    return {
        "optimizer": name,
        "params": setting.params(),
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
    """Search the DataLoader settings of the loaders the script builds (and the thread count beside
    workers); with `out_dir`, write the lock."""
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
        as_written = label(None, asked, n_threads)
        if not reference.loaders or reference.samples == 0:
            message = "no loader to tune: the script took no batch from a DataLoader"
        elif reference.seconds_per_sample is None:
            message = f"no loader to tune: the script's loop ran fewer than {MIN_STEADY_BATCHES + 1} batches per pass"
        else:
            settings = [ScriptSetting(None, n_threads), *candidates(asked, cores, n_threads)]
            spent = now() - began
            per_round = reference.run_seconds * len(settings)
            rounds = int(min(MAX_ROUNDS, max(MIN_ROUNDS, (budget - spent) // max(per_round, 1e-9))))
            share = (budget - spent) / (rounds * len(settings)) - reference.setup_seconds
            loop_seconds = max(MIN_LOOP_SECONDS, share, MIN_TRIAL_BATCHES * reference.batch_seconds)
            names = [label(s, asked, n_threads) for s in settings]
            trials, failed = measure_settings(script, settings, rounds, loop_seconds, names, progress)
            steps = judge(settings, names, trials, failed, reference, recipe.keep.min_speedup)
            base = [r for t in trials[0] if (r := t.pass_seconds_per_sample(reference.first_pass_batches))]
            base_rate = 1.0 / float(np.median(base)) if base else None
            best = next((i for i, step in enumerate(steps, start=1) if step["verdict"] == ACCEPTED), None)
            if best is not None:
                chosen = settings[best]
                step = steps[best - 1]
                speedup, ci = step["speedup"], (step["speedup_ci"][0], step["speedup_ci"][1])
            message = (
                f"kept {names[best]}: {speedup:.2f}x samples/s over {as_written}, same batches"
                if best is not None
                else f"nothing kept: {as_written} stays (no setting was faster beyond noise with the same batches)"
            )
    lock_path = _write_lock(script, recipe, out_dir, chosen, speedup) if out_dir is not None else None
    return ScriptOptimizeResult(
        name=script.path.stem,
        recipe=recipe.name,
        threads=n_threads,
        cores=cores,
        steps=tuple(steps),
        chosen=chosen.loader if chosen else None,
        chosen_threads=chosen.threads if chosen else None,
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
    settings: list[ScriptSetting],
    rounds: int,
    loop_seconds: float,
    names: list[str],
    progress: Progress,
) -> tuple[list[list[Trial]], dict[int, str]]:
    """Trials of each setting in interleaved rounds (forward, then backward), each at its thread
    count, and why any failed."""
    trials: list[list[Trial]] = [[] for _ in settings]
    failed: dict[int, str] = {}
    for r in range(rounds):
        order = range(len(settings)) if r % 2 == 0 else reversed(range(len(settings)))
        for i in order:
            if i in failed:
                continue
            progress(f"round {r + 1}/{rounds}: {names[i]}")
            try:
                with thread_count(settings[i].threads):
                    trials[i].append(run_trial(script, settings[i].loader, loop_seconds=loop_seconds))
            except AccelError as exc:
                if i == 0:  # the script fails as written: nothing to compare against
                    raise
                failed[i] = exc.message
    return trials, failed


def judge(
    settings: list[ScriptSetting],
    names: list[str],
    trials: list[list[Trial]],
    failed: dict[int, str],
    reference: Trial,
    min_speedup: float,
) -> list[dict[str, Any]]:
    """One step per candidate (settings[1:]) against the as-written settings[0]; at most one is
    accepted, the fastest of those faster beyond `min_speedup` with the same batches. Pure."""
    batches = reference.first_pass_batches
    base = [t.pass_seconds_per_sample(batches) for t in trials[0]]
    own_differs = next((d for t in trials[0] if (d := batches_differ(reference, t))), None)
    steps = []
    for i, (setting, name) in enumerate(zip(settings[1:], names[1:]), start=1):
        if i in failed:
            steps.append(_step(setting, name, FAILED, f"the script failed with it: {failed[i]}"))
            continue
        startup = float(np.median([t.startup_seconds / max(t.passes, 1) for t in trials[i]])) if trials[i] else 0.0
        pairs = [(b, c) for b, t in zip(base, trials[i]) if b and (c := t.pass_seconds_per_sample(batches))]
        if len(pairs) < MIN_ROUNDS:
            reason = f"fewer than {MIN_ROUNDS} rounds gave a steady-state rate"
            steps.append(_step(setting, name, REVERTED, reason, startup_seconds=startup))
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
            steps.append(_step(setting, name, REVERTED, reason, fidelity={"batches": "not comparable"}, **fields))
        elif differs:
            reason = (
                f"the batches differ from the script's own ({differs}): its Dataset likely draws from a "
                "global RNG, which each worker process seeds apart"
            )
            steps.append(_step(setting, name, REVERTED, reason, fidelity={"batches": "batches differ"}, **fields))
        elif ci[0] <= min_speedup:
            reason = f"not faster beyond noise: its interval reaches {ci[0]:.2f}x, keeping needs > {min_speedup:.2f}x"
            steps.append(_step(setting, name, REVERTED, reason, fidelity={"batches": "same batches"}, **fields))
        else:
            reason = f"faster than {names[0]} beyond noise, same batches"
            steps.append(_step(setting, name, ACCEPTED, reason, fidelity={"batches": "same batches"}, **fields))
    accepted = [step for step in steps if step["verdict"] == ACCEPTED]
    best = max(accepted, key=lambda step: step["speedup"]) if accepted else None
    for step in accepted:
        if step is not best and best is not None:
            step["verdict"] = REVERTED
            step["reason"] = f"faster, but {best['optimizer']} was more so ({best['speedup']:.2f}x)"
    return steps


def _write_lock(
    script: Script, recipe: Recipe, out_dir: str | os.PathLike, chosen: ScriptSetting | None, speedup: float
) -> Path:
    # The thread count is part of what was measured: workers and intra-op threads share the cores.
    # A candidate's loader is always explicit (only the as-written run has none, and it is never kept).
    entries = (
        (LockEntry(SCRIPT_LOADER_ENTRY, {"threads": chosen.threads}, dataclasses.asdict(chosen.loader)),)
        if chosen is not None and chosen.loader is not None
        else ()
    )
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
