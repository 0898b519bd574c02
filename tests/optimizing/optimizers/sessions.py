"""What the session settings' tests share (runtime.threads, runtime.spinning): a model kept in an
ONNX Runtime session by a search whose lock re-applies the setting, and the corpus's keyword-called
BERT rebuilt with it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

import accel
from accel.core.machine import describe_machine
from accel.optimizing.lock import Lock, read_lock
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.run import optimize

TESTS = Path(__file__).resolve().parents[2]


def optimized_session(tmp_path: Path, setting: Any) -> tuple[Lock, accel.Pipeline, accel.Pipeline]:
    """tests/planted/hw_tiny_ops.py searched with onnx.runtime then `setting` (a recipe candidate),
    each kept whatever it measures above 0.2x (these tests are about the composition and the lock):
    the lock, the pipeline loaded with it, and the pipeline as it was."""
    torch.set_num_threads(2)  # the callers' autouse fixture puts the count back
    file = tmp_path / "tiny_ops.py"
    shutil.copy(TESTS / "planted" / "hw_tiny_ops.py", file)
    rules = [{"name": "runtime", "try": ["onnx.runtime"]}, {"name": "setting", "try": [setting]}]
    recipe = parse_recipe(
        {
            "name": "session-setting",
            "target": "latency",
            "order": "as_written",
            "keep": {"min_speedup": 0.2},
            "rules": rules,
        }
    )
    optimize(file, recipe, out_dir=tmp_path / "out", budget_seconds=60)
    return read_lock(tmp_path / "out"), accel.load(file, lock=tmp_path / "out"), accel.load(file)


def rebuilt_bert(tmp_path: Path, setting: str, params: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
    """The corpus's padded BERT (dict batches called by keyword, a ModelOutput back) in an ONNX
    Runtime session at two threads, and that session rebuilt by `setting`: both models and both
    outputs on the example batch."""
    torch.set_num_threads(2)  # the callers' autouse fixture puts the count back
    context = Context(machine=describe_machine("cpu"), workdir=tmp_path)
    bert = accel.load(TESTS / "real" / "bert_padded.py")
    exporter, optimizer = OPTIMIZERS.get("onnx.runtime"), OPTIMIZERS.get(setting)
    session = exporter.apply(bert, make_config(exporter, {}), context).pipeline.model
    rebuilt = optimizer.apply(bert.replace(model=session), make_config(optimizer, params), context).pipeline.model
    batch = bert.example_batch()
    with torch.inference_mode():
        return session, rebuilt, session(**batch), rebuilt(**batch)
