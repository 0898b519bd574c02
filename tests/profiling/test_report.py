"""The public JSON schema (accel.profile/1), its round trip, severity thresholds and rendering."""

import io
import json

import pytest
import torch
from rich.console import Console

import accel
from accel.cli.render_profile import render_profile
from accel.profiling.report import Finding, Report, Stage, finding_kinds, severity_for
from tests.paths import PLANTED


@pytest.fixture(scope="module")
def padded_report(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = tmp_path_factory.mktemp("json") / "report.json"
        report = accel.profile(PLANTED / "data_padded.py", json_path=path, budget_seconds=2.0)
    finally:
        torch.set_num_threads(threads)
    return report, json.loads(path.read_text())


def test_json_has_the_public_keys(padded_report):
    _, data = padded_report
    assert data["schema"] == "accel.profile/1"
    assert isinstance(data["target"], str) and data["target"] == "data_padded"
    assert isinstance(data["machine"], dict) and data["machine"]["cores"] >= 1
    assert {"name", "seconds", "share"} <= set(data["stages"][0])
    assert data["throughput"]["samples_per_s"] > 0
    assert data["primary"] in finding_kinds() or data["primary"] == "none"
    for finding in data["findings"]:
        assert {"kind", "severity", "share", "impact", "summary", "evidence", "recommendations"} <= set(finding)
        assert finding["kind"] in finding_kinds()
        assert finding["severity"] in ("high", "medium", "low", "info")
        assert 0.0 <= finding["share"] <= 1.0 and 0.0 <= finding["impact"] <= 1.0
        assert finding["severity"] == severity_for(finding["impact"])
    impacts = [f["impact"] for f in data["findings"]]
    assert impacts == sorted(impacts, reverse=True)
    e2e = data["end_to_end"]
    assert e2e["wait_seconds"] + e2e["compute_seconds"] <= e2e["seconds"] * (1 + 1e-9)


def test_json_round_trips(padded_report):
    report, data = padded_report
    again = Report.from_dict(data)
    assert again.to_dict() == json.loads(json.dumps(report.to_dict(), default=str))
    assert again.primary == data["primary"] == report.primary


def test_primary_is_the_highest_impact_of_medium_or_high():
    def finding(kind, impact):
        return Finding.from_impact(kind, share=impact, impact=impact, summary=kind)

    report = Report(
        target="t",
        machine=None,
        stages=[],
        samples_per_s=1.0,
        findings=[finding("data_loading", 0.2), finding("padding", 0.5), finding("overhead", 0.1)],
    )
    assert report.primary == "padding"
    quiet = Report(target="t", machine=None, stages=[], samples_per_s=1.0, findings=[finding("padding", 0.1)])
    assert quiet.primary == "none"


@pytest.mark.parametrize(
    "impact, severity",
    [
        (0.0, "info"),
        (0.029, "info"),
        (0.03, "low"),
        (0.149, "low"),
        (0.15, "medium"),
        (0.399, "medium"),
        (0.4, "high"),
        (1.0, "high"),
    ],
)
def test_severity_thresholds(impact, severity):
    assert severity_for(impact) == severity


def test_findings_validate_their_fields():
    with pytest.raises(ValueError, match="unknown finding kind"):
        Finding(kind="slowness", severity="high", share=0.5, impact=0.5, summary="")
    with pytest.raises(ValueError, match="share must lie in 0..1"):
        Finding(kind="padding", severity="high", share=1.5, impact=0.5, summary="")
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        Stage(name="decode", seconds=-1.0, share=0.1)


def test_rendering_shows_stages_findings_and_verdict(padded_report):
    report, _ = padded_report
    out = io.StringIO()
    render_profile(report, Console(file=out, width=100, color_system=None))
    text = out.getvalue()
    assert "accel profile data_padded" in text
    for stage in report.stages:
        assert stage.name in text
    assert "padding" in text and "batch.bucket" in text
    assert "bottleneck: padding" in text
    assert "waiting for data" in text
