"""cache.decoded: the on-disk store, invalidation, crash safety, refusal of random stages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context
from accel.optimizing.optimizers._store import (
    CacheError,
    DecodedStore,
    clear,
    describe,
    flatten_sample,
    read_record,
    records,
)
from accel.optimizing.optimizers.cache_decoded import CachedStage, code_digest
from tests.paths import PLANTED, ROOT

OPT = OPTIMIZERS.get("cache.decoded")
NS = "0123456789abcdef-01234567"  # a namespace name as cache.decoded makes them


@pytest.fixture
def context(tmp_path):
    return Context(machine=describe_machine(), workdir=tmp_path)


def _apply(pipeline, cache_dir, context):
    return OPT.apply(pipeline, OPT.Config(cache_dir=str(cache_dir)), context)


def test_store_round_trips_structures(tmp_path):
    store = DecodedStore(tmp_path, NS, max_bytes=1 << 20)
    sample = {
        "image": torch.arange(12, dtype=torch.float32).reshape(3, 4),
        "label": (np.int64(3) * np.ones(2, np.int64), 7),
    }
    store.put("ab" * 32, sample)
    back = store.get("ab" * 32)
    assert torch.equal(back["image"], sample["image"])
    assert np.array_equal(back["label"][0], sample["label"][0]) and back["label"][1] == 7
    assert store.get("cd" * 32) is None


def test_store_refuses_user_objects():
    with pytest.raises(CacheError, match="not a tensor"):
        flatten_sample({"x": object()})


def test_size_limit_evicts_oldest(tmp_path):
    store = DecodedStore(tmp_path, NS, max_bytes=5 * 4200)
    for i in range(12):
        store.put(f"{i:02d}" * 32, torch.zeros(1024))  # about 4.2 kB a record
        os.utime(store.path_of(f"{i:02d}" * 32), (time.time() - 100 + i, time.time() - 100 + i))
    kept = store.keys()
    assert 1 <= len(kept) <= 5
    assert f"{11:02d}" * 32 in kept and f"{0:02d}" * 32 not in kept


def test_cached_pipeline_matches_and_reads_from_disk(tmp_path, context):
    pipeline = accel.load(PLANTED / "dp_decode_bound.py")
    applied = _apply(pipeline, tmp_path, context)
    assert applied.notes["stages_cached"] == ["decode", "transform"]
    assert applied.notes["records_built"] == len(pipeline.source)
    assert applied.setup_seconds > 0
    # Steady state: reading a record is much cheaper than decoding the JPEG (planted ~100x).
    assert applied.notes["steady_state_prepare_speedup"] > 3
    reference = pipeline.run()
    cached = applied.pipeline.run()
    assert all(torch.equal(a, b) for a, b in zip(reference, cached))
    assert applied.pipeline.decode.hits >= len(pipeline.source)
    assert len(records(tmp_path)) == len(pipeline.source)


def test_changed_sample_misses(tmp_path, context):
    pipeline = accel.load(PLANTED / "dp_decode_bound.py")
    _apply(pipeline, tmp_path, context)
    from tests.planted.dp_decode_bound import make_jpegs

    edited = list(pipeline.source)
    edited[3] = make_jpegs(1, seed=99)[0]
    again = _apply(pipeline.replace(source=edited), tmp_path, context)
    assert again.notes["records_built"] == 1
    assert again.notes["records_reused"] == len(edited) - 1
    result = again.pipeline.run()
    reference = pipeline.replace(source=edited).run()
    assert torch.equal(result[3], reference[3])


def test_changed_function_misses(tmp_path, context):
    pipeline = accel.load(PLANTED / "dp_random_augment.py")
    scale = 1.0

    def transform(image):
        return image * scale

    first = _apply(pipeline.replace(transform=transform), tmp_path, context)
    assert first.notes["stages_cached"] == ["decode", "transform"]
    scale = 2.0  # a closure value changes: the cached results would be stale
    second = _apply(pipeline.replace(transform=transform), tmp_path, context)
    assert second.notes["namespace"] != first.notes["namespace"]
    assert second.notes["records_built"] == len(pipeline.source)
    assert torch.equal(second.pipeline.run()[0], pipeline.replace(transform=transform).run()[0])

    def transform_edited(image):
        return image * 2.0 + 0.0

    assert code_digest(transform_edited) != code_digest(transform)


def test_random_transform_caches_decode_only(tmp_path, context):
    pipeline = accel.load(PLANTED / "dp_random_augment.py")
    assert OPT.applicable(pipeline, context) is None
    applied = _apply(pipeline, tmp_path, context)
    assert applied.notes["stages_cached"] == ["decode"]
    assert "random" in applied.notes["plan"]
    assert applied.pipeline.transform is pipeline.transform
    runs = [applied.pipeline.run()[0] for _ in range(2)]
    assert not torch.equal(runs[0], runs[1])  # the augmentation still draws anew


def test_random_decode_is_refused(context):
    pipeline = accel.load(PLANTED / "dp_random_augment.py")
    reason = OPT.applicable(pipeline.replace(decode=lambda seed: torch.rand(4), transform=None), context)
    assert reason is not None and "random" in reason


def test_non_tensor_samples_are_refused(context):
    pipeline = accel.load(PLANTED / "dp_random_augment.py")
    reason = OPT.applicable(pipeline.replace(decode=lambda seed: {"text": f"sample {seed}"}, transform=None), context)
    assert reason is not None and "not a tensor" in reason


def test_info_and_clear(tmp_path, context):
    pipeline = accel.load(PLANTED / "dp_random_augment.py")
    _apply(pipeline, tmp_path, context)
    (info,) = describe(tmp_path)
    assert info.entries == len(pipeline.source) and info.bytes_on_disk > 0
    assert info.meta["stages"] == ["decode"]
    assert clear(tmp_path) == len(pipeline.source)
    assert describe(tmp_path) == []


BUILDER = textwrap.dedent("""
    import sys, time, torch
    from accel.optimizing.optimizers._store import DecodedStore
    from accel.optimizing.optimizers.cache_decoded import CachedStage
    NS = "0123456789abcdef-01234567"

    def decode(i):
        time.sleep(0.01)
        return torch.full((256, 1024), float(i))  # 1 MB a record: writes take a while

    stage = CachedStage(DecodedStore(sys.argv[1], NS, max_bytes=1 << 30), NS, (decode,))
    for i in range(int(sys.argv[2])):
        stage(i)
        print(i, flush=True)
""")


def test_killed_build_leaves_consistent_cache_and_resumes(tmp_path):
    script = tmp_path / "builder.py"
    script.write_text(BUILDER)
    root = tmp_path / "cache"
    count = 200
    process = subprocess.Popen(
        [sys.executable, str(script), str(root), str(count)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    for _ in range(10):  # let some records land, then kill in the middle of the build
        process.stdout.readline()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = records(root)
    assert 10 <= len(written) < count
    for path in written:  # every record present is whole
        value = read_record(path)
        assert value.shape == (256, 1024)

    def decode(i):
        return torch.full((256, 1024), float(i))

    stage = CachedStage(DecodedStore(root, NS, max_bytes=1 << 30), NS, (decode,))
    for i in range(count):
        assert float(stage(i)[0, 0]) == float(i)
    assert stage.hits == len(written)
    assert stage.misses == count - len(written)
    assert len(records(root)) == count


def test_cli_info_and_clear(tmp_path, context):
    from typer.testing import CliRunner

    from accel.cli import app

    pipeline = accel.load(PLANTED / "dp_random_augment.py")
    _apply(pipeline, tmp_path, context)
    runner = CliRunner()
    info = runner.invoke(app, ["cache", "info", "--dir", str(tmp_path)])
    assert info.exit_code == 0 and "16 records" in info.output
    missing = runner.invoke(app, ["cache", "clear", "--dir", str(tmp_path), "--namespace", "nope"])
    assert missing.exit_code == 2 and "no cache namespace" in missing.output
    cleared = runner.invoke(app, ["cache", "clear", "--dir", str(tmp_path)])
    assert cleared.exit_code == 0 and "removed 16" in cleared.output
    assert "no cached samples" in runner.invoke(app, ["cache", "info", "--dir", str(tmp_path)]).output


def test_same_file_loaded_again_reuses_the_cache(tmp_path, context):
    first = _apply(accel.load(PLANTED / "dp_decode_bound.py"), tmp_path, context)
    second = _apply(accel.load(PLANTED / "dp_decode_bound.py"), tmp_path, context)
    assert second.notes["namespace"] == first.notes["namespace"]
    assert second.notes["records_built"] == 0


@pytest.mark.slow
def test_optimize_end_to_end_keeps_the_cache_and_the_lock_reapplies_it(tmp_path, fresh_cache):
    from accel.optimizing.run import optimize
    from accel.optimizing.search.engine import ACCEPTED

    # fresh_cache: the records served below are the ones this run built; the session's calibration
    # is copied in (calibrating again would take about 10 s and test nothing here)
    recipe = tmp_path / "data.yaml"
    recipe.write_text(
        textwrap.dedent("""
        name: data
        description: the data-path optimizers only
        target: throughput
        budget_seconds: 12
        keep: {min_speedup: 1.03}
        guard: {min_cosine: 0.995, max_metric_drop: 0.01}
        rules:
          - name: data-path
            try: [cache.decoded, cache.results]
    """)
    )
    result = optimize(PLANTED / "dp_decode_bound.py", recipe, out_dir=tmp_path / "out", budget_seconds=40)
    verdicts = {step.optimizer: step.verdict for step in result.steps}
    assert verdicts["cache.decoded"] == ACCEPTED, [s.to_dict() for s in result.steps]
    assert verdicts["cache.results"] != ACCEPTED  # no repeated inputs: hashing only costs
    assert result.speedup > 1.5  # ~30x on a quiet machine; generous for a loaded one
    restored = accel.load(PLANTED / "dp_decode_bound.py", lock=result.lock_path)
    assert isinstance(restored.decode, CachedStage)
    restored.run()
    assert restored.decode.misses == 0  # served from the records the optimize run built


def test_cache_fills_and_serves_from_loader_workers(tmp_path):
    pipeline = accel.load(PLANTED / "dp_random_augment.py").replace(transform=None, num_workers=2)
    stage = CachedStage(DecodedStore(tmp_path, NS, max_bytes=1 << 20), NS, (pipeline.decode,))
    cached = pipeline.replace(decode=stage)
    first = cached.run()  # the workers write the records
    assert len(records(tmp_path)) == len(pipeline.source)
    second = cached.run()  # and read them back
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert all(torch.equal(a, b) for a, b in zip(first, pipeline.replace(num_workers=0).run()))


# --- sources that are references: what decode reads is tracked ----------------------------------
def _image_bytes(value: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _file_name_pipeline(root: Path, count: int) -> accel.Pipeline:
    from PIL import Image

    folder = str(root)

    def decode(name: str) -> torch.Tensor:  # the raw sample is only a name: decode joins it to a root
        with Image.open(os.path.join(folder, name)) as image:
            return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32))

    for i in range(count):
        (root / f"img_{i:03d}.png").write_bytes(_image_bytes(i))
    return accel.Pipeline(model=torch.nn.Flatten(), source=[f"img_{i:03d}.png" for i in range(count)], decode=decode)


def test_rewritten_files_behind_file_names_are_never_served_stale(tmp_path, context):
    images = tmp_path / "images"
    images.mkdir()
    pipeline = _file_name_pipeline(images, 12)
    applied = _apply(pipeline, tmp_path / "cache", context)
    assert applied.notes["files_tracked"] == 12
    for i in range(12):  # retrained data: half rewritten in place, half replaced (a new inode)
        target = images / f"img_{i:03d}.png"
        if i % 2:
            target.write_bytes(_image_bytes(200 - i))
        else:
            (images / "new.png").write_bytes(_image_bytes(200 - i))
            os.replace(images / "new.png", target)
    served = applied.pipeline.run()
    fresh = pipeline.run()
    stale = sum(not torch.equal(a, b) for a, b in zip(served, fresh))
    assert stale == 0 and applied.pipeline.decode.stale == 12
    again = applied.pipeline.run()  # the new records are hits now
    assert all(torch.equal(a, b) for a, b in zip(again, fresh)) and applied.pipeline.decode.stale == 12


def test_a_source_accel_cannot_check_is_refused_unless_opted_in(tmp_path, context):
    import socket

    def decode(key: int) -> torch.Tensor:  # as a database or URL fetch would: data accel cannot stat
        socket.getaddrinfo("localhost", 80)
        return torch.full((4,), float(key))

    pipeline = accel.Pipeline(model=torch.nn.Identity(), source=list(range(8)), decode=decode)
    with pytest.raises(CacheError, match="socket.getaddrinfo") as info:
        _apply(pipeline, tmp_path, context)
    assert "allow_untracked" in info.value.hint
    applied = OPT.apply(pipeline, OPT.Config(cache_dir=str(tmp_path), allow_untracked=True), context)
    assert applied.notes["stages_cached"] == ["decode"]


@pytest.mark.parametrize("draw", ["random", "numpy", "torch"])
def test_randomness_is_detected_from_the_rng_states_not_from_luck(context, draw):
    import random

    draws = {
        "random": lambda: random.random() < 0.5,
        "numpy": lambda: np.random.rand() < 0.5,
        "torch": lambda: bool(torch.rand(()) < 0.5),
    }

    def decode(seed: int) -> torch.Tensor:
        image = torch.arange(12.0).reshape(3, 4) + seed
        return image.flip(1) if draws[draw]() else image  # a 50% flip: one pair of calls misses it half the time

    pipeline = accel.Pipeline(model=torch.nn.Identity(), source=list(range(8)), decode=decode)
    state = torch.get_rng_state()
    reason = OPT.applicable(pipeline, context)
    assert reason is not None and f"draws from the {draw} RNG" in reason
    assert torch.equal(torch.get_rng_state(), state)  # probing put the user's RNG back


def test_library_versions_are_part_of_the_namespace(monkeypatch):
    import PIL

    from accel.optimizing.optimizers import _fingerprint
    from tests.planted.dp_decode_bound import decode

    before = code_digest(decode)
    monkeypatch.setattr(PIL, "__version__", "0.0.1")
    _fingerprint.package_version.cache_clear()
    try:
        assert code_digest(decode) != before
    finally:
        monkeypatch.undo()
        _fingerprint.package_version.cache_clear()


def test_clean_up_touches_only_the_stores_own_files(tmp_path):
    shared = tmp_path  # the cache dir pointed at a folder other tools use too
    foreign = [shared / ".notes.tmp", shared / "other" / "ab" / "x.rec", shared / "other" / ".y.tmp"]
    for path in foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not accel's")
        os.utime(path, (0, 0))  # old: a sweep by age alone would take them
    store = DecodedStore(shared, NS, max_bytes=1 << 20)
    store.put("a" * 64, torch.zeros(4))
    own_temp = store.path_of("b" * 64).with_name(f".{'b' * 64}.rec.x1y2.tmp")
    own_temp.parent.mkdir(exist_ok=True)
    own_temp.write_bytes(b"half")
    os.utime(own_temp, (0, 0))
    DecodedStore(shared, NS, max_bytes=1 << 20)  # opening sweeps the store's stale temporaries
    assert not own_temp.exists()
    assert clear(shared) == 1
    assert all(path.read_text() == "not accel's" for path in foreign)
    assert not (shared / NS).exists()
