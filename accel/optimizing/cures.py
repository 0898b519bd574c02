"""Which optimizers cure which findings: the join of the analyzers' declarations and the optimizers'.

An analyzer declares the optimizer names its findings may recommend (accel.profiling.analyzers:
`register(..., recommends=...)`); an optimizer declares the finding kinds it cures (`Optimizer.cures`).
Profiling never imports optimizing, so the names cross the layer as strings and are checked here: a
name that is not a registered optimizer, or one that does not declare it cures the kind, is an error
that names the valid ones, never a recommendation dropped in silence.
"""

from __future__ import annotations

from accel.core.errors import UnknownComponentError
from accel.optimizing.optimizers import OPTIMIZERS
from accel.profiling.analyzers import ANALYZERS
from accel.profiling.report import finding_kinds


def cures_for(kind: str) -> list[str]:
    """The registered optimizers that declare they cure finding kind `kind`, by name."""
    return [name for name, optimizer in OPTIMIZERS.items() if kind in optimizer.cures]


def cure_problem(kind: str, name: str) -> str | None:
    """None when `name` is a registered optimizer that declares it cures `kind`, else what is wrong."""
    valid = f"optimizers that cure {kind}: {', '.join(cures_for(kind)) or 'none'}"
    if name not in OPTIMIZERS:
        return f"a {kind} finding recommends '{name}', but no optimizer '{name}' is registered ({valid})"
    if kind not in OPTIMIZERS.get(name).cures:
        return f"a {kind} finding recommends '{name}', which does not declare it cures {kind} ({valid})"
    return None


def check_cure(kind: str, name: str) -> None:
    """Raise unless `name` is a registered optimizer that declares it cures `kind`."""
    problem = cure_problem(kind, name)
    if problem is not None:
        raise UnknownComponentError(problem, f"add '{kind}' to the optimizer's cures, or recommend another")


def declaration_problems() -> list[str]:
    """Every mismatch between the two sides' declarations, in words (empty when they agree)."""
    problems = [
        f"analyzer {kind}: {problem}"
        for kind, spec in ANALYZERS.items()
        for problem in (cure_problem(kind, name) for name in spec.recommends)
        if problem is not None
    ]
    kinds = set(finding_kinds())
    for name, optimizer in OPTIMIZERS.items():
        unknown = sorted(set(optimizer.cures) - kinds)
        if unknown:
            problems.append(f"optimizer {name} cures unknown finding kind {', '.join(unknown)}")
    return problems
