"""Which of a recipe's candidates the engine tries: rules whose `when` holds, their candidates (or
the optimizers the profile's findings recommend), in recipe order (the engine then orders them:
accel.optimizing.search.budgeting), less those a Selection (--only, --skip) leaves out.

What is not tried is still a step: a rule that does not apply skips its candidates, an optimizer a
finding recommends that is not registered (or does not cure that finding) is a skipped step saying
so, and so is a candidate --only or --skip leaves out; never dropped.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from accel.core.errors import UnknownComponentError
from accel.core.pipeline import Pipeline
from accel.optimizing.cures import cure_problem
from accel.optimizing.decision import Verdict
from accel.optimizing.optimizers import OPTIMIZERS
from accel.optimizing.recipes.schema import Candidate, Recipe, Rule
from accel.optimizing.steps import Step
from accel.profiling.report import SEVERITIES


def rule_matches(rule: Rule, pipeline: Pipeline, report: Any) -> str | None:
    """None when the rule applies, else why not."""
    when = rule.when
    if when.has_source is not None and when.has_source != pipeline.has_source:
        return "the pipeline has a source" if pipeline.has_source else "the pipeline has no source"
    if when.has_generate is not None and when.has_generate != (pipeline.generate is not None):
        return (
            "the pipeline runs a generate loop"
            if pipeline.generate is not None
            else "the pipeline has no generate loop"
        )
    if when.max_batch_size is not None and pipeline.batch_size > when.max_batch_size:
        return f"batch_size {pipeline.batch_size} > {when.max_batch_size}"
    if when.min_batch_size is not None and pipeline.batch_size < when.min_batch_size:
        return f"batch_size {pipeline.batch_size} < {when.min_batch_size}"
    if when.findings:
        return _findings_match(rule, report)
    return None


def _findings_match(rule: Rule, report: Any) -> str | None:
    if report is None:
        return "no profile to match findings against"
    if not matching_findings(rule, report):
        return f"no finding of kind {', '.join(rule.when.findings)} at {rule.when.min_severity} severity or above"
    return None


def matching_findings(rule: Rule, report: Any) -> list[Any]:
    rank = SEVERITIES.index(rule.when.min_severity)
    return [f for f in report.findings if f.kind in rule.when.findings and SEVERITIES.index(f.severity) <= rank]


def recommendations(rule: Rule, report: Any) -> list[tuple[str, str]]:
    """(optimizer name, the finding kind that recommends it) for a `recommended` rule, each name
    once, in the findings' order. The names are whatever the analyzers wrote."""
    found: list[tuple[str, str]] = []
    for finding in matching_findings(rule, report) if report is not None else []:
        found.extend((name, finding.kind) for name in finding.recommendations if name not in {n for n, _ in found})
    return found


def rule_candidates(rule: Rule, report: Any) -> tuple[list[Candidate], list[Step]]:
    """The rule's candidates, and a skipped step for each recommended name no optimizer has."""
    if not rule.recommended:
        return list(rule.candidates), []
    known, unknown = [], []
    for name, kind in recommendations(rule, report):
        if (problem := cure_problem(kind, name)) is None:
            known.append(Candidate(optimizer=name))
        else:
            unknown.append(Step(name, {}, rule.name, Verdict.SKIPPED, problem))
    return known, unknown


def plan(recipe: Recipe, pipeline: Pipeline, report: Any) -> tuple[list[tuple[Rule, Candidate]], list[Step]]:
    """The candidates to try, in order, and the steps of those that will not be."""
    planned: list[tuple[Rule, Candidate]] = []
    skipped: list[Step] = []
    for rule in recipe.rules:
        why_not = rule_matches(rule, pipeline, report)
        if why_not is not None:
            reason = f"rule does not apply: {why_not}"
            skipped.extend(
                Step(c.optimizer, dict(c.params), rule.name, Verdict.SKIPPED, reason) for c in rule.candidates
            )
            continue
        candidates, unknown = rule_candidates(rule, report)
        planned.extend((rule, candidate) for candidate in candidates)
        skipped.extend(unknown)
    return planned, skipped


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which candidates the user picked by name: `only` (when given, nothing else) less `skip`."""

    only: frozenset[str] = frozenset()
    skip: frozenset[str] = frozenset()

    @classmethod
    def of(cls, only: Iterable[str] | None = None, skip: Iterable[str] | None = None) -> Selection:
        """A selection of registered optimizer names; an unknown one is an error listing the valid ones."""
        picked = cls(frozenset(_names(only)), frozenset(_names(skip)))
        unknown = sorted((picked.only | picked.skip) - set(OPTIMIZERS.names()))
        if unknown:
            raise UnknownComponentError(
                f"unknown optimizer {', '.join(repr(name) for name in unknown)} in --only/--skip",
                f"valid optimizers: {', '.join(OPTIMIZERS.names())}",
            )
        return picked

    def why_not(self, name: str) -> str | None:
        """None when `name` is selected, else why not."""
        if self.only and name not in self.only:
            return f"not among --only {', '.join(sorted(self.only))}"
        if name in self.skip:
            return "left out by --skip"
        return None


def _names(value: Iterable[str] | None) -> list[str]:
    """Names from a list whose items may hold several, comma-separated ("a,b")."""
    return [part.strip() for item in value or () for part in str(item).split(",") if part.strip()]


def select(
    planned: list[tuple[Rule, Candidate]], selection: Selection
) -> tuple[list[tuple[Rule, Candidate]], list[Step]]:
    """The planned candidates the selection keeps, and a skipped step for each it leaves out and
    for each --only name the recipe does not try."""
    kept, skipped = [], []
    for rule, candidate in planned:
        why_not = selection.why_not(candidate.optimizer)
        if why_not is None:
            kept.append((rule, candidate))
        else:
            skipped.append(Step(candidate.optimizer, dict(candidate.params), rule.name, Verdict.SKIPPED, why_not))
    tried = {candidate.optimizer for _, candidate in planned}
    for name in sorted(selection.only - tried - selection.skip):
        reason = "--only names it, but this recipe does not try it here (its rules do not apply or do not list it)"
        skipped.append(Step(name, {}, "--only", Verdict.SKIPPED, reason))
    return kept, skipped
