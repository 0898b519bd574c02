"""How the engine spends its budget: what a candidate's trial is predicted to cost, and the order
the candidates are tried in.

A recipe's `try:` lists are the SET of candidates; the order is decided here (unless the recipe
says `order: as_written`):

1. the primary finding's best cure (the one the profile predicts the largest saving for);
2. the others by predicted saving per second of predicted trial cost (cheap, likely wins first;
   a candidate the profile predicts nothing for counts UNPREDICTED_SAVING);
3. candidates timed in fresh processes (a process-wide setting) last: each process rebuilds the
   pipeline, so they are the dearest probes there are. They may take PROCESS_WIDE_SHARE of the
   budget at most.
4. once a candidate failed the guard at every rung it tried (a safer variant that passes stops
   the ladder), the candidates whose arithmetic is as coarse as its go after all the others
   (after_guard_failure): bf16 failing demotes the other 16-bit floats, int8 and int4.
5. a setting of what the model slot keeps (Optimizer.tunes_kept: runtime.spinning) goes after the
   other in-process candidates, since it applies to nothing until something is kept; once the model
   slot keeps something it applies to, it is tried next (tuners_first), unless the profile found
   the cores short.

A trial's predicted cost is its optimizer's declared one-time cost (`predicted_setup_calls` calls
of the baseline plus `predicted_setup_seconds`: an export or a calibration runs the model as it
was), then the guard's calls, a warm-up and FIT_ROUNDS timed rounds at the current best's measured
per-call time (the candidate is timed against it: after a 3x win, a third of the baseline's; at
the baseline's, BERT-base at batch 16 skipped OpenVINO int8 after its first win, predicted at 76 s
with 37 s left). A candidate whose prediction does not
fit what is left is skipped with the budget it needs; one that runs past its slot is cut at the
next round's end (core.measure.compare_interleaved's deadline).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from accel.core.measure import SETTLE_BELOW_SECONDS
from accel.optimizing.fresh import CHILD_SECONDS, MIN_PAIRS
from accel.optimizing.optimizers import NUMERICS, OPTIMIZERS, Optimizer
from accel.optimizing.recipes.schema import Candidate, Guard, Rule
from accel.optimizing.search.measuring import min_rounds
from accel.profiling.contention import fewer_threads_saving

# The largest share of the budget a fresh-process candidate may take: its processes each rebuild
# the pipeline (438 s for runtime.allocator on BERT-base, where the whole budget was 300 s).
PROCESS_WIDE_SHARE = 0.15
# A fresh Python process importing torch and accel before it builds the pipeline.
FRESH_START_SECONDS = 3.0
# Fresh processes a process-wide candidate's applicability probe runs (runtime.allocator's: the
# plain pipeline's page faults in two processes, the pinned one's in a third) before its pairs are timed.
PROBE_PROCESSES = 3
# What a candidate the profile predicts nothing for is assumed to save, to rank it by its cost:
# below any real prediction worth trying first, above a prediction of nothing.
UNPREDICTED_SAVING = 0.05
# The fewest calls a comparison makes per side (core.measure.compare_interleaved as the engine's
# Measurer calls it): warm-up, then the minimum rounds, each with a settle call (latency) or not.
WARMUP_CALLS = 2
# A failing candidate's safer variants may take this share of what was left for trials when the
# candidate started (its first variant always runs): on GPT-2's forward at random init, where no
# int8 rung could hold its near-tied logits' top-1, ORT int8's five rungs took the budget and the
# float32 runtimes that pass were never tried.
LADDER_SHARE = 1 / 3
# The rounds a trial's prediction counts: fewer than a comparison's usual minimum (a deadline cuts
# it there) and enough for an interval that separates a large effect. On a loaded machine the
# baseline's calls, and so every prediction, run long: a candidate that can still be decided is
# tried rather than skipped.
FIT_ROUNDS = 3


@dataclasses.dataclass(frozen=True)
class Costs:
    """What the engine's predictions are made from."""

    call_seconds: float  # the baseline's timed call: a forward (latency, memory) or a pass (throughput)
    load_seconds: float  # building the pipeline from its file, as each fresh process does
    target: str
    peak_processes: int = 0  # fresh processes a trial's peak memory is read in (memory target)
    best_call_seconds: float | None = None  # the current best's call, once a candidate was kept

    @property
    def trial_call_seconds(self) -> float:
        """The call a trial's guard and rounds time: the current best's (its side of each round; the
        candidate on top of it runs about as fast or faster), the baseline's until a win."""
        return self.call_seconds if self.best_call_seconds is None else min(self.best_call_seconds, self.call_seconds)

    def comparison_seconds(self, rounds: int | None = None) -> float:
        """Seconds an in-process comparison of two pipelines at the baseline's speed takes: a
        warm-up, then `rounds` rounds (default: the fewest a comparison takes), each with a settle
        call except for throughput and for calls too long to need one (core.measure.SETTLE_BELOW_SECONDS)."""
        settle = 0 if self.target == "throughput" or self.call_seconds >= SETTLE_BELOW_SECONDS else 1
        rounds = min_rounds(self.target) if rounds is None else rounds
        return 2 * (WARMUP_CALLS + rounds * (1 + settle)) * self.call_seconds

    def fresh_process_seconds(self) -> float:
        return FRESH_START_SECONDS + self.load_seconds + (WARMUP_CALLS + 1) * self.call_seconds + CHILD_SECONDS

    def trial_seconds(self, optimizer: Optimizer, guard: Guard) -> float:
        """A trial's predicted cost: one-time setup, the guard's calls, the shortest comparison."""
        if optimizer.process_wide:
            return (PROBE_PROCESSES + 2 * MIN_PAIRS) * self.fresh_process_seconds()
        setup = optimizer.predicted_setup_seconds + optimizer.predicted_setup_calls * self.call_seconds
        guard_calls = 2 if self.target == "throughput" else guard.validation_batches
        peaks = self.peak_processes * self.fresh_process_seconds()
        timed = dataclasses.replace(self, call_seconds=self.trial_call_seconds)
        return setup + guard_calls * timed.call_seconds + timed.comparison_seconds(FIT_ROUNDS) + peaks


@dataclasses.dataclass(frozen=True)
class Planned:
    """A candidate as the engine will try it: its rule, its predicted saving and trial cost."""

    rule: Rule
    candidate: Candidate
    optimizer: Optimizer
    predicted_saving: float | None
    trial_seconds: float

    @classmethod
    def of(cls, rule: Rule, candidate: Candidate, predicted: dict[str, float], costs: Costs, guard: Guard) -> Planned:
        """`candidate` with its saving as `predicted` and its trial's cost under its rule's guard (else `guard`)."""
        optimizer = OPTIMIZERS.get(candidate.optimizer)
        return cls(
            rule,
            candidate,
            optimizer,
            predicted.get(optimizer.name),
            costs.trial_seconds(optimizer, rule.guard or guard),
        )

    @property
    def value(self) -> float:
        """Predicted saving per second of trial cost."""
        saving = UNPREDICTED_SAVING if self.predicted_saving is None else self.predicted_saving
        return saving / max(self.trial_seconds, 1e-9)


def predicted_savings(report: Any) -> dict[str, float]:
    """Per optimizer, the largest share of end-to-end time a finding predicts it saves; and where the
    profile found other work holding cores the run's threads need, what fewer threads are predicted
    to save (profiling.contention.fewer_threads_saving; on a busy
    machine the thread count comes before candidates slowed by the same queue for cores: beside
    four burners, BERT-base's search skipped runtime.threads for want of budget)."""
    savings: dict[str, float] = {}
    for finding in report.findings if report is not None else []:
        for cure, saving in (finding.evidence.get("predicted_saving") or {}).items():
            savings[cure] = max(savings.get(cure, 0.0), float(saving))
    threads = fewer_threads_saving(getattr(report, "extra", None) or {})
    if threads > 0:
        savings["runtime.threads"] = max(savings.get("runtime.threads", 0.0), threads)
    return savings


def primary_cure(report: Any, among: set[str]) -> str | None:
    """The primary finding's best cure among `among`: the largest predicted saving, else its first
    recommendation there; None without a primary finding."""
    if report is None or report.primary == "none":
        return None
    finding = report.finding(report.primary)
    if finding is None:
        return None
    predicted = {k: v for k, v in (finding.evidence.get("predicted_saving") or {}).items() if k in among}
    if predicted:
        return max(predicted, key=lambda cure: predicted[cure])
    return next((name for name in finding.recommendations if name in among), None)


def ladder_stop(before: float, available: float) -> str | None:
    """Why the next safer variant is not tried: the candidate and its variants so far took more
    than LADDER_SHARE of the `before` seconds left when it started; None while they have not."""
    spent = before - available
    if spent <= LADDER_SHARE * before:
        return None
    return (
        f"not tried: this candidate's trials took {spent:.0f} s, over {LADDER_SHARE:.0%} of the "
        f"{before:.0f} s left when it started; the other candidates keep the rest"
    )


def rung_shortfall(last_seconds: float, available: float) -> str | None:
    """Why the next safer variant is not tried: the rung before it took `last_seconds` (its export,
    quantization and guard, timed only briefly as it failed), more than the `available` seconds
    left for trials; None while it fits. Passing the guard, the variant is timed in full. It reuses
    the rung before's export and fusion pass (optimizers/_export_cache.py) but may quantize more
    slowly: on GPT-2's fused step the reused export and fusion were 23 s of a 54-68 s first rung,
    and the per-channel rung's own quantizer 17-21 s more than the per-tensor one's (27-34 s, a
    Python loop over 133,201 output channels), so both rungs took 50-68 s on a 2-core AVX2 EPYC and
    the rung before is the better guess; subtracting the reused share would start a rung that
    overruns. (Predicted from the optimizer's declared cost, that per-channel rung was started
    with 21 s left, took 38 s and ran the search 10 s past its budget.)"""
    if last_seconds <= available:
        return None
    return (
        f"needs ~{math.ceil(last_seconds - available)} s more budget: the rung before took "
        f"{last_seconds:.0f} s, {max(available, 0.0):.0f} s were left for trials"
    )


def after_guard_failure(queue: list[Planned], failed: Optimizer) -> tuple[list[Planned], str]:
    """The candidates still to try once `failed` failed the guard at every rung it tried: those whose
    arithmetic is as coarse as its or coarser (Optimizer.numerics) go after the others, in their
    order; what moved, in a line ("" when nothing did). A float32 candidate's failure says nothing
    of the others. What fails the guard at int8 on one output (GPT-2's near-tied logits at random
    init: top-1 agreement 85-93% under every int8 tool) fails it under the next int8 tool too; with
    them first, the float32 runtimes that pass were skipped for want of budget."""
    level = NUMERICS.index(failed.numerics)
    coarse = [p for p in queue if level and NUMERICS.index(p.optimizer.numerics) >= level]
    rest = [p for p in queue if p not in coarse]
    if not coarse or not rest:
        return queue, ""
    names = ", ".join(dict.fromkeys(p.optimizer.name for p in coarse))
    return rest + coarse, (
        f"{failed.name} failed the guard at every rung tried: the {failed.numerics} and coarser candidates "
        f"({names}) go after the other {len(rest)}"
    )


def tuners_first(queue: list[Planned], kept: Any, context: Any, report: Any) -> tuple[list[Planned], str]:
    """Once the model slot kept a candidate: the settings of what it kept (Optimizer.tunes_kept)
    that apply to it now go first, so a small budget still measures them on it (GPT-2's generate
    loop kept in ONNX Runtime ran 1.15-1.3x faster spinning, timed by hand; ranked by its cost
    alone, the setting was tried before anything was kept and applied to nothing). Not where the
    profile found the cores short: there a spinning pool takes them from the rest, and it stays
    last. What moved, in a line ("" when nothing did)."""
    if fewer_threads_saving(getattr(report, "extra", None) or {}) > 0:
        return queue, ""
    tuners = [p for p in queue if p.optimizer.tunes_kept and p.optimizer.applicable(kept, context) is None]
    if not tuners or queue[: len(tuners)] == tuners:
        return queue, ""
    names = ", ".join(dict.fromkeys(p.optimizer.name for p in tuners))
    return tuners + [p for p in queue if p not in tuners], f"{names} next, on the {type(kept.model).__name__} kept"


def by_prediction(planned: list[Planned], first: str | None) -> list[Planned]:
    """The order the engine tries candidates in (see the module docstring); ties keep the recipe's.
    A candidate that extends another (Optimizer.extends) goes just before it, wherever the base
    ranks: kept, it makes the base's trial needless; not kept, the base follows at once."""

    def key(item: tuple[int, Planned]) -> tuple[int, int, int, float, int]:
        index, p = item
        # A setting of what the model slot keeps goes last: before anything is kept it applies to
        # nothing, and tried then it was spent (tuners_first brings it forward once something is).
        tuner = int(p.optimizer.tunes_kept)
        return (0 if p.optimizer.name == first else 1, int(p.optimizer.process_wide), tuner, -p.value, index)

    ordered = [p for _, p in sorted(enumerate(planned), key=key)]
    for _ in range(len(ordered)):  # chains (fusions_int8 -> int8_dynamic -> runtime) settle in as many passes
        moved = False
        for extender in [p for p in ordered if p.optimizer.extends]:
            position = {p.optimizer.name: i for i, p in enumerate(ordered)}
            base = position.get(extender.optimizer.extends)
            if base is not None and ordered.index(extender) > base:
                ordered.remove(extender)
                ordered.insert(base, extender)
                moved = True
        if not moved:
            break
    return ordered


def extends_closure(optimizer: Optimizer) -> set[str]:
    """The optimizers whose change `optimizer` makes, directly or through another it extends."""
    found: set[str] = set()
    name = optimizer.extends
    while name and name not in found and name in OPTIMIZERS:
        found.add(name)
        name = OPTIMIZERS.get(name).extends
    return found


def extended(predicted: dict[str, float], optimizers: list[Optimizer]) -> dict[str, float]:
    """The savings predicted, with each extender given its base's where it has none of its own:
    it makes the base's change and more, so it is predicted to save at least as much."""
    found = dict(predicted)
    for optimizer in optimizers:
        if optimizer.extends in predicted and optimizer.name not in predicted:
            found[optimizer.name] = predicted[optimizer.extends]
    return found


def shortfall(predicted: float, available: float, process_wide_cap: float | None, budget: float) -> int | None:
    """How many more seconds of --budget a trial predicted at `predicted` seconds needs, or None
    when it fits `available` (and, for a fresh-process candidate, its cap of the budget)."""
    needs = predicted - available
    if process_wide_cap is not None and predicted > process_wide_cap:
        needs = max(needs, predicted / PROCESS_WIDE_SHARE - budget)
    return math.ceil(needs) if needs > 0 else None
