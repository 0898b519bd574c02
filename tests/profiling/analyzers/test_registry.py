"""The analyzers' declarations: every kind list derives from them, every recommendation is an
optimizer that declares it cures the kind, every section an analyzer reads reaches the JSON, and a
planted analyzer registered by its decorator alone reaches the report and the recipe engine."""

from __future__ import annotations

import dataclasses
import json

import pytest

from accel.core.errors import UnknownComponentError
from accel.core.io import json_default
from accel.optimizing.cures import check_cure, cure_problem, cures_for, declaration_problems
from accel.optimizing.optimizers import OPTIMIZERS
from accel.optimizing.recipes import get_recipe, parse_recipe
from accel.profiling import analyzers
from accel.profiling.analyzers import ANALYZERS, AnalyzerSpec, Role, analyze, register, unregister
from accel.profiling.data import (
    DtypeTiming,
    GenerationProfile,
    GenerationStep,
    LayerActivation,
    MemoryProfile,
    ProfileData,
)
from accel.profiling.report import Finding, Report, finding_kinds
from accel.profiling.run import build_report
from tests.profiling.analyzers.recorded import cost, fake_machine, loader_machine, op, recorded

BUILTIN_KINDS = {
    "compute_bound",
    "data_loading",
    "generation",
    "input_decoding",
    "memory_bandwidth",
    "memory_peak",
    "overhead",
    "padding",
    "repeated_inputs",
    "straggler",
}
# Where each ProfileData field an analyzer reads lands in the report's JSON...
JSON_SECTIONS = {
    "ops": "cost",
    "memory": "memory",
    "generation": "generation",
    "dtype_timings": "dtype_timings",
    "end_to_end": "end_to_end",
    "stages": "stages",
}
# ...or why it does not: raw per-sample records whose totals the findings' evidence carries.
NOT_IN_JSON = {
    "padding": "per-batch element counts: the padding finding's evidence has their totals",
    "sample_hashes": "one hash per sample: the repeated_inputs finding's evidence has the counts",
    "extra": "a multi-rank job's timelines: the report's ranks section summarizes them",
}
PLANTED_KIND = "planted_slowness"


@pytest.fixture
def restore_analyzers():
    """The registry (and the report's valid kinds) as they were, whatever a test registers."""
    before = dict(ANALYZERS.items())
    yield
    for kind in set(ANALYZERS.names()) - set(before):
        unregister(kind)
    for kind, spec in before.items():
        if ANALYZERS.get(kind) is not spec:
            unregister(kind)
            register(kind, spec.role, reads=spec.reads, recommends=spec.recommends)(spec.analyze)


def test_every_kind_list_derives_from_the_declarations():
    assert set(ANALYZERS.names()) == BUILTIN_KINDS
    assert finding_kinds() == analyzers.finding_kinds() == tuple(sorted(BUILTIN_KINDS))
    assert analyzers.cause_kinds() == ("generation", "padding", "repeated_inputs")
    assert analyzers.op_class_kinds() == ("compute_bound", "memory_bandwidth", "overhead")
    # the default recipe's `recommended` rule matches every registered kind
    (rule,) = [r for r in get_recipe("default").rules if r.name == "recommended"]
    assert set(rule.when.findings) == BUILTIN_KINDS


def test_every_recommendation_is_an_optimizer_that_declares_it_cures_the_kind():
    assert declaration_problems() == []
    for kind, spec in ANALYZERS.items():
        assert spec.recommends, kind
        assert set(spec.recommends) <= set(cures_for(kind)), kind
    assert cures_for("padding") == ["batch.bucket", "batch.trim_padding"]


def test_a_wrong_name_in_a_declaration_fails(restore_analyzers):
    spec = ANALYZERS.get("padding")
    unregister("padding")
    register("padding", spec.role, reads=spec.reads, recommends=("batch.bukcet", "compile"))(spec.analyze)
    problems = declaration_problems()
    assert len(problems) == 2, problems
    assert any("no optimizer 'batch.bukcet' is registered" in p for p in problems)
    assert any("'compile', which does not declare it cures padding" in p for p in problems)
    assert cure_problem("padding", "batch.bucket") is None
    with pytest.raises(UnknownComponentError, match="no optimizer 'batch.bukcet'"):
        check_cure("padding", "batch.bukcet")


def test_an_optimizer_curing_an_unknown_kind_fails(monkeypatch):
    compile_ = type(OPTIMIZERS.get("compile"))
    monkeypatch.setattr(compile_, "cures", (*compile_.cures, "slowness"))
    assert declaration_problems() == ["optimizer compile cures unknown finding kind slowness"]


def test_a_recommendation_missing_from_the_declaration_is_an_error(restore_analyzers):
    @register(PLANTED_KIND, Role.OTHER, recommends=("batch.size",))
    def undeclared(data, machine):
        return [Finding.from_impact(PLANTED_KIND, share=0.5, impact=0.5, summary="s", recommendations=["compile"])]

    with pytest.raises(ValueError, match="recommends compile, missing from its declaration"):
        analyze(ProfileData(target="t"), fake_machine(), [PLANTED_KIND])


def test_a_declaration_names_real_profile_sections():
    with pytest.raises(ValueError, match="unknown ProfileData field 'opz'"):
        AnalyzerSpec(kind="k", role=Role.OTHER, analyze=lambda data, machine: [], reads=("opz",))


def test_every_section_an_analyzer_reads_reaches_the_json():
    read = {field for spec in dict(ANALYZERS.items()).values() for field in spec.reads}
    assert read <= set(JSON_SECTIONS) | set(NOT_IN_JSON), read - set(JSON_SECTIONS) - set(NOT_IN_JSON)
    layers = (LayerActivation("conv1", 2_000, 16_000, (1, 3, 8, 8)),)
    steps = tuple(GenerationStep(position=p, seconds=0.001 * p) for p in range(8, 16))
    data = dataclasses.replace(
        recorded(1.0, 1.0, 2.0),
        ops=cost(op(flops=10**6, bytes_moved=10**6, seconds=0.001)),
        memory=MemoryProfile(peak_bytes=20_000, parameter_bytes=100, layers=layers),
        generation=GenerationProfile(steps=steps, total_seconds=sum(s.seconds for s in steps), parameter_bytes=10),
        dtype_timings=(DtypeTiming("fp32", 0.1), DtypeTiming("bf16", 0.05)),
    )
    report = build_report(data, fake_machine())
    sections = json.loads(json.dumps(report.to_dict(), default=json_default))
    missing = sorted(JSON_SECTIONS[f] for f in read if f in JSON_SECTIONS and JSON_SECTIONS[f] not in sections)
    assert missing == []
    assert Report.from_dict(sections).to_dict().keys() == report.to_dict().keys()


def test_a_planted_analyzer_reaches_the_report_and_the_recipe_engine(restore_analyzers):
    from accel.optimizing.search.engine import matching_findings

    @register(PLANTED_KIND, Role.OTHER, reads=("stages",), recommends=("batch.size",))
    def planted(data, machine):
        return [
            Finding.from_impact(
                PLANTED_KIND, share=0.5, impact=0.5, summary="planted: half the time", recommendations=["batch.size"]
            )
        ]

    assert PLANTED_KIND in finding_kinds() and cures_for(PLANTED_KIND) == []
    report = build_report(recorded(0.0, 0.0, 10.0), loader_machine())
    finding = report.finding(PLANTED_KIND)
    assert finding is not None and finding.evidence["predicted_saving"] == {"batch.size": 0.5}
    assert report.primary == PLANTED_KIND
    # `findings: any` matches it (the default recipe's recommended rule), an explicit list still works
    (rule,) = [r for r in get_recipe("default").rules if r.name == "recommended"]
    assert matching_findings(rule, report) == [finding]
    listed = parse_recipe(
        {"name": "x", "rules": [{"name": "r", "when": {"findings": [PLANTED_KIND]}, "try": ["compile"]}]}
    )
    assert matching_findings(listed.rules[0], report) == [finding]
    # the optimizers have not declared they cure it: the join says so
    assert "does not declare it cures planted_slowness" in cure_problem(PLANTED_KIND, "batch.size")
    unregister(PLANTED_KIND)
    assert PLANTED_KIND not in finding_kinds()
