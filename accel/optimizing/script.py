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
epochs is not kept. A candidate is kept by the engine's keep test (accel.optimizing.decision):
when the 95% interval of its speedup (ratio of medians, whole rounds resampled:
accel.core.stats.paired_ratio_ci) lies above the recipe's keep.min_speedup, and the batches it
yields are the script's own (its guard): the digests of the first batches of each pass must match
the as-written run's (a Dataset that draws from the global RNG in __getitem__ gives other samples
in worker processes). Its steps, verdicts and lock are the engine's kinds too. Ctrl-C or SIGTERM
ends the rounds early: those run by then are judged (a setting with fewer than MIN_ROUNDS is
skipped), and the result, marked partial, is written and locked as a whole one is.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from accel.core.errors import AccelError
from accel.core.loading import Script
from accel.core.machine import usable_cores
from accel.core.measure import now, thread_count
from accel.core.pipeline import Pipeline
from accel.core.stats import paired_ratio_ci
from accel.optimizing.decision import KeepTest, Verdict, decide
from accel.optimizing.lock import LOCK_NAME, SCRIPT_LOCK, LockEntry, write_lock
from accel.optimizing.locking import build_lock
from accel.optimizing.optimizers.loader_tune import Setting
from accel.optimizing.recipes.schema import Recipe
from accel.optimizing.script_loader import SCRIPT_LOADER_ENTRY
from accel.optimizing.script_settings import ScriptSetting, candidates, label
from accel.optimizing.script_trial import MIN_STEADY_BATCHES, Trial, batches_differ, run_trial
from accel.optimizing.steps import Step

OPTIMIZE_SCRIPT_SCHEMA = "accel.optimize/1"
# Fewer rounds than this cannot put a 95% interval on a ratio of medians.
MIN_ROUNDS = 3
MAX_ROUNDS = 7
# A trial's loop is never cut shorter than this, whatever the budget: start-up alone can take a
# second; nor shorter than MIN_TRIAL_BATCHES batches at the as-written rate (a median needs a few).
MIN_LOOP_SECONDS = 3.0
MIN_TRIAL_BATCHES = 8
ACCEPTED, REVERTED, FAILED, SKIPPED = Verdict.ACCEPTED, Verdict.REVERTED, Verdict.FAILED, Verdict.SKIPPED
THROUGHPUT = "throughput"  # what a script's setting is measured and locked for

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class ScriptOptimizeResult:
    """The script search's result: what the JSON, the CLI and the lock (lock.Searched) read."""

    name: str
    recipe: str
    threads: int
    cores: int
    steps: tuple[Step, ...]
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
    keep: KeepTest = KeepTest(target=THROUGHPUT)
    # Interrupted (Ctrl-C, SIGTERM): the rounds run by then judged, what was kept by then locked.
    partial: bool = False
    lock_kind: ClassVar[str] = SCRIPT_LOCK

    @property
    def pipeline(self) -> Pipeline:
        """A training script has no pipeline object: its search chose DataLoader settings."""
        raise AccelError(
            f"{self.name} is a training script: its search chose DataLoader settings, not a pipeline",
            "run it with those settings through its lock (accel run), or read .chosen",
        )

    def __repr__(self) -> str:  # short: no step list
        chosen = self.chosen.label() if self.chosen is not None else None
        return (
            f"ScriptOptimizeResult(name={self.name!r}, recipe={self.recipe!r}, speedup={self.speedup:.2f}x, "
            f"chosen={chosen!r}, steps={len(self.steps)}, lock_path={str(self.lock_path) if self.lock_path else None!r})"
        )

    def lock_entries(self) -> tuple[LockEntry, ...]:
        # The thread count is part of what was measured: workers and intra-op threads share the cores.
        if self.chosen is None:
            return ()
        return (LockEntry(SCRIPT_LOADER_ENTRY, {"threads": self.chosen_threads}, dataclasses.asdict(self.chosen)),)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": OPTIMIZE_SCRIPT_SCHEMA,
            "mode": "script",
            "target": self.name,
            "recipe": self.recipe,
            "objective": THROUGHPUT,
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
            "steps": [step.to_dict() for step in self.steps],
            "lock_path": str(self.lock_path) if self.lock_path else None,
            "elapsed_seconds": self.elapsed_seconds,
            "partial": self.partial,
        }


@dataclasses.dataclass(frozen=True)
class _Found:
    """What the search found: its steps, the setting kept (None: the script's own stay)."""

    steps: tuple[Step, ...] = ()
    chosen: ScriptSetting | None = None
    rounds: int = 0
    base_rate: float | None = None
    speedup: float = 1.0
    speedup_ci: tuple[float, float] = (1.0, 1.0)
    message: str = ""
    partial: bool = False


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
    test = KeepTest.of(recipe, THROUGHPUT)
    with thread_count(threads) as n_threads:
        progress(f"running {script.path.name} as written")
        reference = run_trial(script, None)
        cores = usable_cores()
        why_not = _nothing_to_tune(reference)
        if why_not is not None:
            found = _Found(message=why_not)
        else:
            asked = reference.loaders[0].asked
            settings = [ScriptSetting(None, n_threads), *candidates(asked, cores, n_threads)]
            found = search_settings(script, reference, settings, test, budget - (now() - began), progress)
    result = ScriptOptimizeResult(
        name=script.path.stem,
        recipe=recipe.name,
        threads=n_threads,
        cores=cores,
        steps=found.steps,
        chosen=found.chosen.loader if found.chosen else None,
        chosen_threads=found.chosen.threads if found.chosen else None,
        baseline_samples_per_s=found.base_rate,
        final_samples_per_s=found.base_rate * found.speedup if found.base_rate is not None else None,
        speedup=found.speedup,
        speedup_ci=found.speedup_ci,
        message=found.message,
        rounds=found.rounds,
        elapsed_seconds=now() - began,
        keep=test,
        partial=found.partial,
    )
    if out_dir is None:
        return result
    return dataclasses.replace(result, lock_path=write_lock(Path(out_dir) / LOCK_NAME, build_lock(script.path, result)))


def _nothing_to_tune(reference: Trial) -> str | None:
    if not reference.loaders or reference.samples == 0:
        return "no loader to tune: the script took no batch from a DataLoader"
    if reference.seconds_per_sample is None:
        return f"no loader to tune: the script's loop ran fewer than {MIN_STEADY_BATCHES + 1} batches per pass"
    return None


def search_settings(
    script: Script,
    reference: Trial,
    settings: list[ScriptSetting],
    test: KeepTest,
    seconds: float,
    progress: Progress,
) -> _Found:
    """Run the settings (the as-written one first) in interleaved rounds over `seconds`, judge
    each candidate against the as-written one, and keep the best."""
    asked, threads = reference.loaders[0].asked, settings[0].threads
    per_round = reference.run_seconds * len(settings)
    rounds = int(min(MAX_ROUNDS, max(MIN_ROUNDS, seconds // max(per_round, 1e-9))))
    share = seconds / (rounds * len(settings)) - reference.setup_seconds
    loop_seconds = max(MIN_LOOP_SECONDS, share, MIN_TRIAL_BATCHES * reference.batch_seconds)
    names = [label(s, asked, threads) for s in settings]
    trials, failed, stopped = measure_settings(script, settings, rounds, loop_seconds, names, progress)
    steps = judge(settings, names, trials, failed, reference, test, interrupted=stopped is not None)
    base = [r for t in trials[0] if (r := t.pass_seconds_per_sample(reference.first_pass_batches))]
    base_rate = 1.0 / float(np.median(base)) if base else None
    best = next((i for i, step in enumerate(steps, start=1) if step.verdict == ACCEPTED), None)
    # Ctrl-C or SIGTERM: what the rounds run so far decided, said as such
    stop = f"interrupted in round {stopped} of {rounds}: " if stopped is not None else ""
    partial = stopped is not None
    rounds = stopped - 1 if stopped is not None else rounds  # the whole rounds run
    if best is None:
        message = f"nothing kept: {names[0]} stays (no setting was faster beyond noise with the same batches)"
        message = f"{stop}nothing was kept: the lock is empty" if partial else message
        return _Found(tuple(steps), None, rounds, base_rate, message=message, partial=partial)
    kept = steps[best - 1]
    speedup, ci = kept.speedup or 1.0, kept.speedup_ci or (1.0, 1.0)
    message = f"{stop}kept {names[best]}: {speedup:.2f}x samples/s over {names[0]}, same batches"
    return _Found(tuple(steps), settings[best], rounds, base_rate, speedup, (ci[0], ci[1]), message, partial)


def measure_settings(
    script: Script,
    settings: list[ScriptSetting],
    rounds: int,
    loop_seconds: float,
    names: list[str],
    progress: Progress,
) -> tuple[list[list[Trial]], dict[int, str], int | None]:
    """Trials of each setting in interleaved rounds (forward, then backward), each at its thread
    count, why any failed, and the round Ctrl-C or SIGTERM stopped them in (None: all ran). The
    trials of the rounds run by then are kept: the caller judges them."""
    trials: list[list[Trial]] = [[] for _ in settings]
    failed: dict[int, str] = {}
    r = 0
    try:
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
                    if stopped_by_signal(exc):  # the script caught the interrupt and exited (Lightning does)
                        raise KeyboardInterrupt from exc
                    if i == 0:  # the script fails as written: nothing to compare against
                        raise
                    failed[i] = exc.message
    except KeyboardInterrupt:
        return trials, failed, r + 1
    return trials, failed, None


def stopped_by_signal(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is behind the error: a script that catches Ctrl-C and exits
    (Lightning's Trainer does) raises SystemExit while handling it."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


@dataclasses.dataclass(frozen=True)
class _Judge:
    """Each candidate's trials against the as-written ones (`base`: its per-round seconds per
    sample over a pass as long as the reference's first)."""

    reference: Trial
    base: list[float | None]
    own_differs: str | None  # the as-written runs' batches differ from one another
    test: KeepTest
    interrupted: bool = False  # Ctrl-C or SIGTERM ended the rounds early

    def step(self, setting: ScriptSetting, name: str, trials: list[Trial]) -> Step:
        batches = self.reference.first_pass_batches
        startup = float(np.median([t.startup_seconds / max(t.passes, 1) for t in trials])) if trials else 0.0
        pairs = [(b, c) for b, t in zip(self.base, trials) if b and (c := t.pass_seconds_per_sample(batches))]
        if len(pairs) < MIN_ROUNDS:
            verdict = SKIPPED if self.interrupted else REVERTED
            reason = f"fewer than {MIN_ROUNDS} rounds gave a steady-state rate"
            reason = f"interrupted: {reason} ({len(pairs)})" if self.interrupted else reason
            return Step(name, setting.params(), SCRIPT_LOADER_ENTRY, verdict, reason, setup_seconds=startup)
        speedup, ci = paired_ratio_ci([b for b, _ in pairs], [c for _, c in pairs])
        guard, fidelity = self.guard(trials)
        decision = decide(self.test, speedup, (ci[0], ci[1]), guard_failure=guard)
        return Step(
            name,
            setting.params(),
            SCRIPT_LOADER_ENTRY,
            decision.verdict,
            decision.reason + ("; same batches" if decision.kept else ""),
            speedup=speedup,
            speedup_ci=(ci[0], ci[1]),
            fidelity={"batches": fidelity},
            setup_seconds=startup,
            notes={"as_written_samples_per_s": [1 / b for b, _ in pairs], "samples_per_s": [1 / c for _, c in pairs]},
        )

    def guard(self, trials: list[Trial]) -> tuple[str | None, str]:
        """Why the candidate's batches cannot be called the script's own (None: they are), and the
        fidelity the table shows."""
        if self.own_differs:
            return (
                f"the script's own batches change from run to run ({self.own_differs}): seed its randomness "
                "so accel can check that a setting keeps them",
                "not comparable",
            )
        differs = next((d for t in trials if (d := batches_differ(self.reference, t))), None)
        if differs:
            return (
                f"the batches differ from the script's own ({differs}): its Dataset likely draws from a "
                "global RNG, which each worker process seeds apart",
                "batches differ",
            )
        return None, "same batches"


def judge(
    settings: list[ScriptSetting],
    names: list[str],
    trials: list[list[Trial]],
    failed: dict[int, str],
    reference: Trial,
    test: KeepTest,
    *,
    interrupted: bool = False,
) -> list[Step]:
    """One step per candidate (settings[1:]) against the as-written settings[0], each held to the
    keep test; at most one is accepted, the fastest of those kept. Pure. `interrupted`: the rounds
    were ended early, and a candidate with too few of them was skipped, not reverted."""
    base = [t.pass_seconds_per_sample(reference.first_pass_batches) for t in trials[0]]
    own_differs = next((d for t in trials[0] if (d := batches_differ(reference, t))), None)
    judged = _Judge(reference, base, own_differs, test, interrupted)
    steps = [
        Step(name, setting.params(), SCRIPT_LOADER_ENTRY, FAILED, f"the script failed with it: {failed[i]}")
        if i in failed
        else judged.step(setting, name, trials[i])
        for i, (setting, name) in enumerate(zip(settings[1:], names[1:]), start=1)
    ]
    accepted = [step for step in steps if step.verdict == ACCEPTED]
    best = max(accepted, key=lambda step: step.speedup or 0.0) if accepted else None
    return [
        dataclasses.replace(
            step, verdict=REVERTED, reason=f"faster, but {best.optimizer} was more so ({best.speedup or 0.0:.2f}x)"
        )
        if best is not None and step.verdict == ACCEPTED and step is not best
        else step
        for step in steps
    ]
