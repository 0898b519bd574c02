"""A lock records the versions of the runtimes its optimizers declare (Optimizer.runtime_packages)
and refuses to load under another version of one; a runtime its optimizers do not declare is not
checked."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch

from accel.core.errors import LockError
from accel.optimizing.lock import Lock, LockEntry, changed_versions, check_lock, file_sha256
from accel.optimizing.optimizers import OPTIMIZERS, Applied, Optimizer
from accel.optimizing.runtimes import current_versions, runtime_packages

YAML_VERSION = importlib.metadata.version("pyyaml")


class NeedsYaml(Optimizer):
    """A planted optimizer whose lock entries depend on PyYAML's version."""

    name = "planted.needs_yaml"
    runtime_packages = ("pyyaml",)

    def apply(self, pipeline, config, context):
        return Applied(pipeline=pipeline)


class NeedsNothing(Optimizer):
    name = "planted.needs_nothing"

    def apply(self, pipeline, config, context):
        return Applied(pipeline=pipeline)


@pytest.fixture(autouse=True)
def _planted():
    for cls in (NeedsYaml, NeedsNothing):
        OPTIMIZERS.add(cls.name, cls())
    yield
    for cls in (NeedsYaml, NeedsNothing):
        OPTIMIZERS.remove(cls.name)


def _lock(tmp_path, optimizer: str, versions: dict[str, str]):
    file = tmp_path / "pipe.py"
    file.write_text("x = 1\n")
    lock = Lock(file.name, file_sha256(file), (LockEntry(optimizer),), versions=versions)
    return lock, file


def test_declared_runtimes_are_recorded_beside_torch():
    assert runtime_packages([LockEntry(NeedsYaml.name)]) == ("torch", "pyyaml")
    assert runtime_packages([LockEntry("script.loader")]) == ("torch",)  # no optimizer: torch only
    versions = current_versions([LockEntry(NeedsYaml.name)])
    assert versions["pyyaml"] == YAML_VERSION and versions["torch"] == torch.__version__
    assert "pyyaml" not in current_versions([LockEntry(NeedsNothing.name)])
    assert set(OPTIMIZERS.get("onnx.runtime").runtime_packages) == {"onnxruntime", "onnx"}


def test_a_lock_made_under_another_version_of_a_declared_runtime_is_refused(tmp_path):
    lock, file = _lock(tmp_path, NeedsYaml.name, {"torch": torch.__version__, "pyyaml": "0.0.1"})
    assert changed_versions(lock) == [f"pyyaml 0.0.1 -> {YAML_VERSION}"]
    with pytest.raises(LockError) as info:
        check_lock(lock, tmp_path / "accel.lock.yaml", None, file)
    assert f"other versions (pyyaml 0.0.1 -> {YAML_VERSION})" in info.value.message
    assert "accel verify" in info.value.hint
    check_lock(lock, tmp_path / "accel.lock.yaml", None, file, versions=False)  # verify's own check


def test_a_runtime_the_entries_do_not_declare_is_not_checked(tmp_path):
    lock, file = _lock(tmp_path, NeedsNothing.name, {"torch": torch.__version__, "pyyaml": "0.0.1"})
    assert changed_versions(lock) == []
    check_lock(lock, tmp_path / "accel.lock.yaml", None, file)
