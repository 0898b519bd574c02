"""memory_peak: a high-resolution CNN's leading layers hold the peak that patches would cut."""

from __future__ import annotations

import dataclasses

import pytest

from accel.profiling.data import LayerActivation, MemoryProfile, PatchCandidatePlan, PatchPlan, ProfileData
from tests.profiling.analyzers.recorded import fake_machine, kinds, profile_hardware


@pytest.mark.slow
def test_highres_cnn_has_memory_peak_with_predicted_reduction(machine):
    report = profile_hardware("highres_cnn", machine)
    finding = report.finding("memory_peak")
    assert finding is not None
    assert finding.evidence["predicted_reduction"] >= 2.0
    assert finding.evidence["leading_working_bytes"] > 4 * finding.evidence["later_working_bytes"]
    assert finding.evidence["peak_bytes"] > 0
    assert report.to_dict()["memory"]["layers"][0]["name"] == "0"


LAYERS = (
    LayerActivation("conv1", 2_000_000, 16_000_000, (1, 3, 256, 256)),
    LayerActivation("pool", 16_000_000, 1_000_000, (1, 16, 256, 256)),
    LayerActivation("conv2", 1_000_000, 500_000, (1, 16, 64, 64)),
    LayerActivation("fc", 1000, 40, (1, 64)),
)


def memory(plan=None, reason=None, peak_bytes=20_000_000, device_memory_bytes=10**10):
    return MemoryProfile(
        peak_bytes=peak_bytes,
        parameter_bytes=10_000,
        layers=LAYERS,
        device_memory_bytes=device_memory_bytes,
        patch_plan=plan,
        no_patch_plan_reason=reason,
    )


def test_memory_peak_predicts_with_the_plan_it_was_given():
    candidates = (
        PatchCandidatePlan(prefix_layers=2, grid=2, predicted_peak_bytes=6_000_000, halo_extra_compute_share=0.01),
        PatchCandidatePlan(prefix_layers=2, grid=4, predicted_peak_bytes=2_500_000, halo_extra_compute_share=0.03),
    )
    plan = PatchPlan(
        module="",
        stage_layers=4,
        local_layers=2,
        stop_reason="layer 3 (Linear mixes all features of its input: not spatially local)",
        first_layer=0,
        unpatched_peak_bytes=18_000_000,
        candidates=candidates,
    )
    found = kinds(ProfileData(target="t", memory=memory(plan)), fake_machine())["memory_peak"]
    # the best candidate (4x4) against the planner's unpatched estimate: 18 / 2.5 = 7.2x, not capped
    assert found.evidence["predicted_reduction"] == pytest.approx(7.2)
    assert found.evidence["predicted_peak_bytes"] == int(20_000_000 / 7.2)
    assert (found.evidence["leading_layers"], found.evidence["grid"]) == (2, 4)
    assert found.recommendations == ["patch.inference"]
    assert "the first 2 of the model's 4 layers" in found.summary and "7.2x" in found.summary
    # a plan whose best candidate cuts less than 2x, or no plan at all: nothing to name
    weak = dataclasses.replace(plan, candidates=(dataclasses.replace(candidates[1], predicted_peak_bytes=10**7),))
    assert "memory_peak" not in kinds(ProfileData(target="t", memory=memory(weak)), fake_machine())
    unplanned = memory(reason="Net is neither an nn.Sequential nor has an nn.Sequential child")
    assert "memory_peak" not in kinds(ProfileData(target="t", memory=unplanned), fake_machine())
    # near the device's memory it is named without a plan, and without a cure
    full = memory(reason="no Sequential", device_memory_bytes=21_000_000)
    near = kinds(ProfileData(target="t", memory=full), fake_machine())["memory_peak"]
    assert near.severity == "medium" and near.recommendations == []
