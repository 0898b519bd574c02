"""Recipes: what `accel optimize` tries, when, and what it keeps, read from YAML.

A recipe file (read with `yaml.safe_load` only) looks like

    name: latency
    description: Per-call latency of the model on its example batch.
    target: latency            # latency | throughput | memory
    budget_seconds: 120
    keep: {min_speedup: 1.03}  # the speedup's whole confidence interval must lie above this
    guard: {min_cosine: 0.999, min_top1_agreement: 0.99, max_metric_drop: 0.01}
    order: by_prediction       # by_prediction (default) | as_written
    rules:
      - name: runtimes
        when: {findings: [overhead, compute_bound], min_severity: low}
        try:
          - onnx.runtime
          - {optimizer: onnx.int8_dynamic, params: {per_channel: true}}
        guard: {min_cosine: 0.995}   # optional, overrides the recipe's guard for this rule
      - name: recommended
        when: {findings: any}      # any: every registered finding kind
        try: recommended           # the registered optimizers the matching findings recommend

The rules' `try:` lists are the SET of candidates; the engine decides the order (the primary
finding's best cure first, then by predicted saving per second of trial cost, fresh-process
candidates last: accel.optimizing.search.budgeting), unless `order: as_written` keeps the recipe's.

Every problem is a RecipeError whose message names the file, the rule and the key, and says
what was expected.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml

from accel.core.budget import MAX_BUDGET_SECONDS
from accel.core.errors import RecipeError
from accel.profiling.report import SEVERITIES, finding_kinds

TARGETS = ("latency", "throughput", "memory")
# How the engine orders a recipe's candidates: by predicted saving per second of trial cost, or as written.
ORDERS = ("by_prediction", "as_written")

# A candidate is kept only when the lower end of its speedup's 95% interval clears 3%: run-to-run
# noise on a busy machine is a few percent, and a change the user must carry should pay for itself.
DEFAULT_MIN_SPEEDUP = 1.03
# The guard's defaults (README "what the guard checks"); a recipe's `guard:` changes any of them.
# Per sample and per float output, the centered cosine (offsets removed) must stay at 0.999 or above:
# int8 and bf16 on well-conditioned models stay above it, a wrong transformation falls far below.
DEFAULT_MIN_COSINE = 0.999
# ...and the relative L2 error ||a - b|| / ||a|| at 5% or below (about what cosine 0.999 allows on
# zero-mean outputs; it is what judges single-number outputs, where a cosine says nothing).
DEFAULT_MAX_RELATIVE_ERROR = 0.05
# Class scores: 99% of top-1 labels must agree with the baseline's (a user sees labels, not logits).
DEFAULT_MIN_TOP1_AGREEMENT = 0.99
# A metric (accuracy, F1...) may drop by at most 1% (relative) for a faster pipeline.
DEFAULT_MAX_METRIC_DROP = 0.01
# Batches of the source the outputs are compared on (beyond those a candidate was calibrated on):
# one example batch hides what a fresh batch shows.
DEFAULT_VALIDATION_BATCHES = 4
# The memory target keeps a candidate that saves 5% of peak memory and is at most 1.25x slower.
DEFAULT_MIN_MEMORY_SAVING = 0.05
DEFAULT_MAX_SLOWDOWN = 1.25
DEFAULT_BUDGET_SECONDS = 120.0
# The built-in recipes are about 2 KB; a file this large is not a recipe (and parsing it would be slow).
MAX_RECIPE_BYTES = 1_000_000
# How many passes one-time costs (export, compile, cache prebuild) are spread over when a recipe does
# not say: a throughput pass is a run over the whole source, a latency or memory pass one call.
DEFAULT_PASSES = {"throughput": 10, "latency": 100_000, "memory": 100_000}


@dataclasses.dataclass(frozen=True)
class Guard:
    """Fidelity: how close the optimized outputs must stay to the baseline's (see fidelity.py).
    Non-finite outputs, structure changes and changed integer outputs always fail; None turns a
    numeric bound off."""

    min_cosine: float | None = DEFAULT_MIN_COSINE
    max_relative_error: float | None = DEFAULT_MAX_RELATIVE_ERROR
    min_top1_agreement: float | None = DEFAULT_MIN_TOP1_AGREEMENT
    max_abs_error: float | None = None
    max_metric_drop: float | None = DEFAULT_MAX_METRIC_DROP
    validation_batches: int = DEFAULT_VALIDATION_BATCHES

    def __post_init__(self) -> None:
        for name in ("min_cosine", "max_relative_error", "min_top1_agreement", "max_abs_error", "max_metric_drop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ValueError(f"{name} must be a number or null, got {value!r}")
        if self.min_cosine is not None and not (-1.0 <= self.min_cosine <= 1.0):
            raise ValueError(f"min_cosine must lie in -1..1, got {self.min_cosine}")
        if self.min_top1_agreement is not None and not (0.0 <= self.min_top1_agreement <= 1.0):
            raise ValueError(f"min_top1_agreement must lie in 0..1, got {self.min_top1_agreement}")
        for name in ("max_relative_error", "max_abs_error", "max_metric_drop"):
            value = getattr(self, name)
            if value is not None and (value < 0 or math.isnan(value)):
                raise ValueError(f"{name} must be >= 0, got {value}")
        if isinstance(self.validation_batches, bool) or not isinstance(self.validation_batches, int):
            raise ValueError(f"validation_batches must be an integer, got {self.validation_batches!r}")
        if self.validation_batches < 1:
            raise ValueError(f"validation_batches must be >= 1, got {self.validation_batches}")


@dataclasses.dataclass(frozen=True)
class Keep:
    """When a candidate that passed the guard is kept."""

    min_speedup: float = DEFAULT_MIN_SPEEDUP
    min_memory_saving: float = DEFAULT_MIN_MEMORY_SAVING
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN
    # Passes the one-time costs are spread over; None: DEFAULT_PASSES for the recipe's target.
    passes: int | None = None

    def __post_init__(self) -> None:
        if self.passes is not None and (isinstance(self.passes, bool) or not isinstance(self.passes, int)):
            raise ValueError(f"passes must be an integer, got {self.passes!r}")
        if self.passes is not None and self.passes < 1:
            raise ValueError(f"passes must be >= 1, got {self.passes}")
        if self.min_speedup <= 0:
            raise ValueError(f"min_speedup must be > 0, got {self.min_speedup}")
        if not (0.0 <= self.min_memory_saving < 1.0):
            raise ValueError(f"min_memory_saving must lie in 0..1, got {self.min_memory_saving}")
        if self.max_slowdown < 1.0:
            raise ValueError(f"max_slowdown must be >= 1, got {self.max_slowdown}")


@dataclasses.dataclass(frozen=True)
class When:
    """When a rule applies. Empty: always. Otherwise every condition given must hold."""

    findings: tuple[str, ...] = ()  # any of these finding kinds (`findings: any`: every registered kind)...
    min_severity: str = "low"  # ...at this severity or above
    has_source: bool | None = None
    has_generate: bool | None = None  # the pipeline runs a generate loop
    max_batch_size: int | None = None
    min_batch_size: int | None = None

    def __post_init__(self) -> None:
        kinds = finding_kinds()
        unknown = [k for k in self.findings if k not in kinds]
        if unknown:
            raise ValueError(
                f"unknown finding kind {unknown[0]!r}; valid: {', '.join(kinds)}, or {ANY_FINDING} for all of them"
            )
        if self.min_severity not in SEVERITIES:
            raise ValueError(f"min_severity must be one of {', '.join(SEVERITIES)}, got {self.min_severity!r}")


@dataclasses.dataclass(frozen=True)
class Candidate:
    optimizer: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    candidates: tuple[Candidate, ...]
    when: When = When()
    guard: Guard | None = None
    # `try: recommended`: the registered optimizers that the matching findings recommend.
    recommended: bool = False


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    target: str
    rules: tuple[Rule, ...]
    guard: Guard = Guard()
    keep: Keep = Keep()
    budget_seconds: float = DEFAULT_BUDGET_SECONDS
    source: str = "<memory>"
    order: str = ORDERS[0]

    @property
    def needs_profile(self) -> bool:
        return any(rule.when.findings for rule in self.rules)

    @property
    def passes(self) -> int:
        """Passes one-time costs are counted over."""
        return self.keep.passes or DEFAULT_PASSES[self.target]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


RECIPE_KEYS = ("name", "description", "target", "budget_seconds", "keep", "guard", "order", "rules")
RULE_KEYS = ("name", "when", "try", "guard")
CANDIDATE_KEYS = ("optimizer", "params")
RECOMMENDED = "recommended"
# `when: {findings: any}`: every registered finding kind.
ANY_FINDING = "any"


def parse_recipe(data: Any, source: str = "<memory>") -> Recipe:
    """Validate a recipe's YAML data; every error names `source`, the rule and the key."""
    where = f"{source}: "
    if not isinstance(data, dict):
        raise RecipeError(
            f"{where}a recipe must be a mapping, got {_kind(data)}",
            f"start the file with keys such as {', '.join(RECIPE_KEYS[:4])}",
        )
    _no_unknown(data, RECIPE_KEYS, where)
    name = _string(data, "name", where, default=Path(source).stem)
    description = _string(data, "description", where, default="")
    target = data.get("target", "latency")
    if target not in TARGETS:
        raise RecipeError(
            f"{where}key 'target': expected one of {', '.join(TARGETS)}, got {target!r}",
            "set target: latency, throughput or memory",
        )
    budget = data.get("budget_seconds", DEFAULT_BUDGET_SECONDS)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= MAX_BUDGET_SECONDS:
        raise RecipeError(
            f"{where}key 'budget_seconds': expected a positive number of seconds up to {MAX_BUDGET_SECONDS:g}"
            f" (a day), got {budget!r}",
            "e.g. budget_seconds: 120",
        )
    order = data.get("order", ORDERS[0])
    if order not in ORDERS:
        raise RecipeError(
            f"{where}key 'order': expected one of {', '.join(ORDERS)}, got {order!r}",
            "leave it out (the engine orders by prediction), or set order: as_written",
        )
    guard = _dataclass(Guard, data.get("guard"), f"{where}key 'guard'")
    keep = _dataclass(Keep, data.get("keep"), f"{where}key 'keep'")
    rules_data = data.get("rules")
    if not isinstance(rules_data, list) or not rules_data:
        raise RecipeError(
            f"{where}key 'rules': expected a non-empty list of rules, got {_kind(rules_data)}",
            "add rules: [{name: ..., try: [onnx.runtime]}]",
        )
    rules = tuple(_parse_rule(r, i, where, guard) for i, r in enumerate(rules_data))
    names = [r.name for r in rules]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise RecipeError(f"{where}rule '{duplicate}' is defined twice", "give each rule its own name")
    return Recipe(
        name=name,
        description=description,
        target=target,
        rules=rules,
        guard=guard,
        keep=keep,
        budget_seconds=float(budget),
        source=source,
        order=order,
    )


def _parse_rule(data: Any, index: int, where: str, recipe_guard: Guard) -> Rule:
    label = f"{where}rule {index + 1}: "
    if not isinstance(data, dict):
        raise RecipeError(
            f"{label}expected a mapping with keys {', '.join(RULE_KEYS)}, got {_kind(data)}",
            "write each rule as {name: ..., try: [...]}",
        )
    name = data.get("name", f"rule{index + 1}")
    if not isinstance(name, str) or not name:
        raise RecipeError(f"{label}key 'name': expected a string, got {name!r}", "e.g. name: runtimes")
    label = f"{where}rule '{name}': "
    _no_unknown(data, RULE_KEYS, label)
    when = _dataclass(When, _with_finding_kinds(data.get("when") or {}), f"{label}key 'when'")
    tries = data.get("try")
    # A rule's guard changes the recipe's guard only in the keys it names.
    guard = (
        _dataclass(Guard, data["guard"], f"{label}key 'guard'", base=recipe_guard)
        if data.get("guard") is not None
        else None
    )
    if tries == RECOMMENDED:
        return Rule(name=name, candidates=(), when=when, guard=guard, recommended=True)
    if not isinstance(tries, list) or not tries:
        raise RecipeError(
            f"{label}key 'try': expected a non-empty list of optimizers or 'recommended', got {_kind(tries)}",
            "e.g. try: [onnx.runtime, quantize.int8_dynamic]",
        )
    candidates = tuple(_parse_candidate(c, label) for c in tries)
    return Rule(name=name, candidates=candidates, when=when, guard=guard)


def _with_finding_kinds(when_data: Any) -> Any:
    """`findings: any` stands for every registered finding kind, so a new analyzer's findings reach
    the rule without an edit here; a single kind may be written without a list."""
    if not isinstance(when_data, dict):
        return when_data
    findings = when_data.get("findings")
    if findings == ANY_FINDING:
        findings = finding_kinds()
    elif isinstance(findings, str):
        findings = [findings]
    if isinstance(findings, (list, tuple)):
        return {**when_data, "findings": tuple(findings)}
    return when_data


def _parse_candidate(data: Any, label: str) -> Candidate:
    from accel.optimizing.optimizers import OPTIMIZERS, make_config

    if isinstance(data, str):
        data = {"optimizer": data}
    if not isinstance(data, dict) or not isinstance(data.get("optimizer"), str):
        raise RecipeError(
            f"{label}key 'try': each entry must be an optimizer name or {{optimizer: NAME, params: {{...}}}}, "
            f"got {data!r}",
            f"optimizers: {', '.join(OPTIMIZERS.names())}",
        )
    _no_unknown(data, CANDIDATE_KEYS, label)
    name = data["optimizer"]
    if name not in OPTIMIZERS:
        raise RecipeError(
            f"{label}key 'try': unknown optimizer '{name}'", f"valid optimizers: {', '.join(OPTIMIZERS.names())}"
        )
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise RecipeError(
            f"{label}optimizer '{name}' key 'params': expected a mapping, got {_kind(params)}",
            "e.g. params: {per_channel: true}",
        )
    make_config(OPTIMIZERS.get(name), params, where=label)
    return Candidate(optimizer=name, params=dict(params))


def _dataclass(cls: type, data: Any, label: str, base: Any = None) -> Any:
    if data is None:
        return cls()
    fields = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(data, dict):
        raise RecipeError(
            f"{label}: expected a mapping with keys {', '.join(fields)}, got {_kind(data)}", f"e.g. {fields[0]}: ..."
        )
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RecipeError(f"{label}: unknown key '{unknown[0]}'", f"valid keys: {', '.join(fields)}")
    try:
        return dataclasses.replace(base, **data) if base is not None else cls(**data)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"{label}: {exc}", f"valid keys: {', '.join(fields)}") from exc


def _no_unknown(data: dict, valid: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in set(data) - set(valid))
    if unknown:
        raise RecipeError(f"{where}unknown key '{unknown[0]}'", f"valid keys: {', '.join(valid)}")


def _string(data: dict, key: str, where: str, default: str) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise RecipeError(f"{where}key '{key}': expected a string, got {_kind(value)}", f"e.g. {key}: my-recipe")
    return value


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def read_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file."""
    file = Path(path)
    if file.is_dir():
        raise RecipeError(f"recipe {file} is a folder, not a file", "pass the path of a .yaml recipe")
    if file.exists() and not file.is_file():  # a FIFO would block the read, /dev/zero would never end it
        raise RecipeError(
            f"recipe {file} is not a regular file (a pipe or a device)", "pass a .yaml file saved on disk"
        )
    if file.exists() and file.stat().st_size > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"recipe {file} is {file.stat().st_size:,} bytes, over the {MAX_RECIPE_BYTES:,} a recipe may have",
            "a recipe is a few lines of YAML: check that this is the file you meant",
        )
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"cannot read recipe {file}: {exc.strerror}", "check the path of the recipe") from exc
    except UnicodeDecodeError as exc:
        raise RecipeError(
            f"recipe {file} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})", "save it as UTF-8"
        ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(
            f"{file}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})", "fix the YAML syntax"
        ) from exc
    return parse_recipe(data, source=str(file))
