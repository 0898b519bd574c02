"""`quantize.embedding` on the DLRM-style recommender (tests/real/dlrm_recommender.py): the tables are
really stored in int8 (or float16) and shrink, the outputs agree, the user's model is untouched; not
applicable where there is no embedding problem (tables in the cache, no tables); a table whose rows
int8 cannot hold is rejected by the guard through the engine and its float16 variant is tried; the
built-in throughput recipe reaches the cure and its lock re-applies it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from types import ModuleType

import pytest
import torch
from torch import nn

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.optimizers.quantize_embedding import HalfTable, Int8Table, stored_bytes
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.search.engine import REVERTED, run_engine
from accel.optimizing.search.fidelity import compare_outputs
from tests.paths import PLANTED, REAL

NAME = "quantize.embedding"
# int8 rows (8 bits over each row's range) move the recommender's click probabilities by ~1e-4.
MIN_COSINE = 0.999
# Rows just beyond a 32 MB last level cache (the guard test's table).
BEYOND_CACHE_ROWS = 160_000


def _recommender() -> ModuleType:
    spec = importlib.util.spec_from_file_location("real_dlrm_recommender", REAL / "dlrm_recommender.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dlrm():
    module = _recommender()
    return module, module.pipeline()


def _context(tmp_path) -> Context:
    return Context(machine=describe_machine("cpu"), workdir=tmp_path)


def _batch(pipeline: accel.Pipeline) -> dict[str, torch.Tensor]:
    return pipeline.example_batch()


@pytest.mark.parametrize(("dtype", "stored", "max_ratio"), [("int8", Int8Table, 0.3), ("fp16", HalfTable, 0.5)])
def test_tables_are_stored_in_fewer_bytes_and_outputs_agree(dlrm, tmp_path, dtype, stored, max_ratio):
    module, pipeline = dlrm
    optimizer = OPTIMIZERS.get(NAME)
    assert optimizer.applicable(pipeline, _context(tmp_path)) is None
    before = {name: p.detach().clone() for name, p in pipeline.model.named_parameters() if "tables" not in name}
    applied = optimizer.apply(pipeline, make_config(optimizer, {"dtype": dtype}), _context(tmp_path))
    quantized = applied.pipeline.model
    assert all(isinstance(table, stored) for table in quantized.tables)
    float_bytes = sum(stored_bytes(table) for table in pipeline.model.tables)
    assert float_bytes == module.SPARSE_FEATURES * module.ROWS * module.EMBEDDING_DIM * 4
    assert sum(stored_bytes(table) for table in quantized.tables) <= max_ratio * float_bytes
    assert {t["dtype"] for t in applied.state["tables"].values()} == {dtype}
    assert json.loads(json.dumps(applied.state)) == applied.state  # what the lock records
    batch = _batch(pipeline)
    with torch.inference_mode():
        fidelity = compare_outputs(pipeline.model(**batch), quantized(**batch))
    assert fidelity.cosine > MIN_COSINE and fidelity.relative_error < 0.01, fidelity
    # the user's model keeps its float tables and every other weight
    assert all(
        type(table) is nn.EmbeddingBag and table.weight.dtype == torch.float32 for table in pipeline.model.tables
    )
    assert all(torch.equal(p, before[name]) for name, p in pipeline.model.named_parameters() if name in before)


def test_a_bag_the_int8_kernel_cannot_compute_is_stored_in_fp16():
    # torch's quantized bag kernel only sums: a mean bag keeps its mode in float16
    from accel.optimizing.optimizers.quantize_embedding import compressed

    torch.manual_seed(0)
    mean_bag, table = nn.EmbeddingBag(1000, 16, mode="mean"), nn.Embedding(1000, 16)
    ids = torch.randint(0, 1000, (8, 5))
    (bag_cure, bag_dtype), (table_cure, table_dtype) = compressed(mean_bag, "int8"), compressed(table, "int8")
    assert (bag_dtype, table_dtype) == ("fp16", "int8")
    assert torch.allclose(bag_cure(ids), mean_bag(ids), atol=1e-3)
    assert torch.allclose(table_cure(ids), table(ids), atol=0.05) and table_cure(ids).dtype == torch.float32


def test_not_applicable_without_an_embedding_problem(tmp_path):
    optimizer = OPTIMIZERS.get(NAME)
    # the control: the same recommender with tables the cache holds
    small = _recommender().pipeline(rows=5_000)
    reason = optimizer.applicable(small, _context(tmp_path))
    assert reason is not None and "within the" in reason and "cache" in reason, reason
    no_tables = accel.load(PLANTED / "hw_wide_mlp.py")
    assert "no float32 nn.Embedding" in optimizer.applicable(no_tables, _context(tmp_path))
    # a transformer's word embedding beside its layers: the tables are not where its bytes go
    wide = nn.Sequential(nn.Embedding(BEYOND_CACHE_ROWS, 64), nn.Linear(64, 64), nn.Linear(64, 200_000))
    reason = optimizer.applicable(
        accel.Pipeline(model=wide, inputs=(torch.zeros(2, 3, dtype=torch.long),)), _context(tmp_path)
    )
    assert reason is not None and "lookups are not where its bytes go" in reason, reason


class OutlierTables(nn.Module):
    """One table beyond the cache whose first column holds a huge count per row (a feature stored
    beside the embedding): int8 rows spend their 256 levels on it and lose the columns read."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.EmbeddingBag(BEYOND_CACHE_ROWS, 64, mode="sum")
        with torch.no_grad():
            self.table.weight[:, 0] = 1000.0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids)[:, 1:]


@pytest.mark.slow
def test_the_guard_rejects_int8_rows_that_lose_the_values_read_and_fp16_is_tried(tmp_path):
    torch.manual_seed(0)
    ids = [torch.randint(0, BEYOND_CACHE_ROWS, (8,)) for _ in range(96)]
    pipeline = accel.Pipeline(model=OutlierTables().eval(), source=ids, batch_size=16, name="outlier_tables")
    recipe = parse_recipe(
        {
            "name": "t",
            "target": "throughput",
            "guard": {"min_cosine": 0.995, "max_relative_error": 0.1},
            "rules": [{"name": "tables", "try": [NAME]}],
        }
    )
    result = run_engine(pipeline, recipe, _context(tmp_path), budget_seconds=30)
    steps = [s for s in result.steps if s.optimizer == NAME]
    int8 = next(s for s in steps if s.params.get("dtype", "int8") == "int8" and s.verdict == REVERTED)
    assert "cosine" in int8.reason or "relative error" in int8.reason, int8.reason
    fp16 = [s for s in steps if s.params.get("dtype") == "fp16"]
    assert fp16, [(s.params, s.verdict, s.reason) for s in steps]
    assert fp16[0].fidelity["cosine"] > 0.9999, fp16[0].reason


@pytest.mark.slow
def test_throughput_recipe_reaches_the_cure_and_the_lock_reapplies_it(tmp_path):
    # Through the console script, as a user runs it (see tests/cli/test_cli_optimize.py on why).
    report, out = tmp_path / "result.json", tmp_path / "out"
    file = str(REAL / "dlrm_recommender.py")
    command = [sys.executable, "-m", "accel", "optimize", file, "--recipe", "throughput", "--threads", "1"]
    command += ["--out", str(out), "--json", str(report), "--budget", "90"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(report.read_text())
    step = next(s for s in data["steps"] if s["optimizer"] == NAME)
    assert step["verdict"] in ("kept", "reverted"), step
    assert step["reason"], step  # kept or reverted with a measured reason
    assert step["fidelity"]["cosine"] > MIN_COSINE, step  # outputs intact
    if NAME not in data["kept"]:
        return
    locked = accel.load(file, out)
    assert all(isinstance(table, (Int8Table, HalfTable)) for table in locked.model.tables)
    original = accel.load(file)
    batch = original.example_batch()
    with torch.inference_mode():
        assert compare_outputs(original.model(**batch), locked.model(**batch)).cosine > MIN_COSINE
