"""`python -m benchmarks peers [--quick] [--models=wide_mlp,bert,bert16,resnet,gpt2,gpt2_generate,corpus]`:
accel optimize against the skilled user's tools, each applied as its own documentation says.

Peers: OpenVINO fp32 (`openvino.convert_model`, `compile_model` with the f32 precision hint) and
NNCF int8 (`nncf.quantize` on a few batches, the transformer scheme for transformers); ONNX Runtime
fused fp32 (TorchScript export of eager attention, `onnxruntime.transformers.optimizer.optimize_model`
at opt_level 0, as ORT documents for BERT and GPT-2; a plain export for the others) and int8
(`quantize_dynamic` on the fused graph; `quantize_static` QDQ for the CNN, as ORT advises for
convolutions); torch.compile `max-autotune-no-cudagraphs` with inductor's freezing (PyTorch's CPU
inference advice); torchao int8 dynamic where torchao is installed. accel runs the `latency` recipe
on the same model (runtime.allocator left out: malloc's thresholds hold for a whole process, so
they cannot be timed in this one), with the recipe's 180 s budget or, for a model slower than
that, BUDGET_CALLS eager calls' worth. Every candidate runs on 2 threads; all are timed interleaved in
rounds in this one process (the eager model too), each round's order shuffled; outputs are compared
with the eager model's by accel's own guard: the `latency` recipe's int8 rule (centered cosine >= 0.995,
relative error <= 0.1), the loosest it applies. A peer outside it is timed and shown but is not the
"best peer" the ratio is taken against (a result accel's guard would refuse is not one it could
have kept); the fastest peer at any fidelity gets a ratio of its own. One-time costs (export, quantization, compile, accel's
search) are printed apart. `--quick`: tiny models and short budgets, for the smoke test.
The corpus case (tests/real/bert_padded.py's padded stream) times each side over the whole stream
(`Pipeline.run`, every padded batch through the side's model; the peers' graphs with dynamic batch
and sequence axes) and accel runs the `throughput` recipe, whose target that is.
GPT-2 generating 32 tokens with its cache is its own case (benchmarks/_peer_generate.py): the peers
loop the decode step in their runtime, and the tokens are compared instead of a cosine (other tokens
than eager's are outside the guard, as accel's exact token guard says).
"""

from __future__ import annotations

import importlib.util
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import accel
from accel.core.machine import describe_machine
from accel.core.stats import paired_ratio_ci
from accel.optimizing.recipes import get_recipe
from accel.optimizing.recipes.schema import Guard
from accel.optimizing.run import optimize
from accel.optimizing.search.fidelity import compare_outputs
from benchmarks._peer_generate import prepare_generate, steps_text
from benchmarks._peer_models import Case, build
from benchmarks._peer_runtimes import CALIBRATION_BATCHES, PEERS, THREADS, calibration, first

MODELS = ("wide_mlp", "bert", "bert16", "resnet", "gpt2", "gpt2_generate", "corpus")
# accel's search budget (seconds) per model; the latency recipe's own is 180 s. A model slower than
# BUDGET_CALLS eager calls in that gets that many calls' worth, as `needs ~N s more budget` advises a
# user of a slow model (BERT-base at batch 16, 2.7 s a call: at 180 s the search reached three
# candidates and skipped openvino.int8, 9 s short).
ACCEL_BUDGET_SECONDS = {False: 180.0, True: 15.0}
BUDGET_CALLS = 100


def accel_budget(case: Case, quick: bool) -> float:
    """accel's budget on the case: the recipe's, or BUDGET_CALLS eager calls (the median of three
    timed after a warm one) where that is longer."""
    seconds = []
    with torch.inference_mode():
        case.call(case.model)  # warm
        for _ in range(3):
            began = time.perf_counter()
            case.call(case.model)
            seconds.append(time.perf_counter() - began)
    return max(ACCEL_BUDGET_SECONDS[quick], BUDGET_CALLS * statistics.median(seconds))


# Interleaved rounds, and the seconds each candidate is called for in a round.
ROUNDS = {False: 12, True: 3}
SLOT_SECONDS = {False: 0.4, True: 0.02}
Call = Callable[[], torch.Tensor]
Prepared = tuple[dict[str, Call], dict[str, str], set[str]]


def peer_guard() -> Guard:
    """The guard a peer's outputs are judged by: the latency recipe's int8 rule's."""
    return next(rule.guard for rule in get_recipe("latency").rules if rule.name == "int8")


def accel_pipeline(case: Case) -> accel.Pipeline:
    """The case as accel's pipeline: its batch first, then the batches the peers calibrate on, as
    the source (so accel's static int8 calibrates on some and validates on the others, where with
    the example batch alone it could validate on nothing and reverts them)."""
    batches = [case.inputs, *calibration(case, CALIBRATION_BATCHES)]
    size = int(case.inputs[0].shape[0])
    samples: list[Any] = []
    for batch in batches:
        for i in range(size):
            row = tuple(t[i] for t in batch)
            samples.append(dict(zip(case.keywords, row)) if case.keywords else row if len(row) > 1 else row[0])
    return accel.Pipeline(model=case.model, source=samples, batch_size=size, name=case.name)


class _Runtime(torch.nn.Module):
    """A peer's callable as the stream pipeline's model: called as the model is, its first output."""

    def __init__(self, fn: Callable[..., Any], keywords: tuple[str, ...]) -> None:
        super().__init__()
        self.fn, self.keywords = fn, keywords

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        return first(self.fn(*args, *(kwargs[k] for k in self.keywords if k in kwargs)))


def _timed(case: Case, model: Any = None, peer: Callable[..., Any] | None = None) -> Call:
    """One side's timed call: the model (or a peer's callable) on the case's batch, or over its
    whole stream; what it returns is compared with eager's."""
    if case.stream is not None:
        pipeline = case.stream.replace(model=_Runtime(peer, case.keywords) if peer else model)
        return lambda: [first(item) for item in pipeline.run()]
    if peer is not None:
        return lambda: first(peer(*case.inputs))
    return lambda: first(case.call(model))


def _named(output: Any) -> Callable[[Any], Any]:
    """What puts a first-output tensor (or a stream's list of them) under the name the model gives
    it, so the guard judges a peer's as it judges accel's: GPT-2's `logits` as class scores (top-1
    agreement), BERT's `last_hidden_state` as features."""
    keys = list(output.keys()) if hasattr(output, "keys") else []
    if not keys:
        return lambda value: value
    name = keys[0]
    return lambda value: [{name: t} for t in value] if isinstance(value, list) else {name: value}


def _prepare(case: Case, workdir: Path, quick: bool) -> Prepared:
    """Each candidate as a timed call, what to print about it (one-time cost, cosine), and the
    peers whose outputs are outside accel's guard."""
    if case.new_tokens:
        return prepare_generate(case, workdir, accel_budget(case, quick), THREADS)
    calls: dict[str, Call] = {"eager": _timed(case, case.model)}
    with torch.inference_mode():
        reference = calls["eager"]()
        named = _named(case.call(case.model))
    notes: dict[str, str] = {}
    outside: set[str] = set()
    guard = peer_guard()
    for label, make, int8 in PEERS:
        if label == "torchao int8" and importlib.util.find_spec("torchao") is None:
            notes[label] = "not installed"
            continue
        if label == "compile max-autotune" and quick:
            notes[label] = "left out of --quick (minutes of compile)"
            continue
        if label == "compile max-autotune" and case.stream is not None:
            notes[label] = "not run on the stream: it autotunes again for each padded length"
            continue
        folder = workdir / label.replace(" ", "-")
        folder.mkdir()
        began = time.perf_counter()
        try:
            call = _timed(case, peer=make(case, folder, int8))
            with torch.inference_mode():
                out = call()
        except Exception as exc:  # noqa: BLE001 - a peer that fails is reported, not fatal
            notes[label] = f"failed ({type(exc).__name__}: {str(exc)[:80]})"
            continue
        fidelity = compare_outputs(named(reference), named(out))
        failure = fidelity.failure(guard)
        if failure is not None:
            outside.add(label)
        within = "" if failure is None else f", OUTSIDE accel's guard ({failure})"
        notes[label] = f"setup {time.perf_counter() - began:.0f} s{within}, cos {fidelity.cosine:.4f}"
        calls[label] = call
    budget = accel_budget(case, quick)
    began = time.perf_counter()
    pipeline = case.stream if case.stream is not None else accel_pipeline(case)
    result = optimize(
        pipeline,
        "throughput" if case.stream is not None else "latency",
        out_dir=workdir / "accel",
        budget_seconds=budget,
        threads=THREADS,
        skip=["runtime.allocator"],
    )
    kept = "+".join(c.optimizer for c in result.result.choices) or "nothing"
    calls["accel"] = (
        (lambda: [first(item) for item in result.pipeline.run()])
        if case.stream is not None
        else lambda: first(result.pipeline.call_model(case.batch))
    )
    with torch.inference_mode():
        cosine = compare_outputs(reference, calls["accel"]()).cosine
    tried = steps_text(result.steps)
    took = time.perf_counter() - began
    notes["accel"] = f"{kept}; search {took:.0f} s, budget {budget:.0f} s ({tried}), cos {cosine:.4f}"
    return calls, notes, outside


def time_interleaved(calls: dict[str, Call], rounds: int, slot_seconds: float) -> dict[str, list[float]]:
    """Per candidate, seconds per call in each round; every round calls each candidate for about
    `slot_seconds`, in an order shuffled each round (seeded): a rotation keeps each candidate behind
    the same other in all but one round, and what a runtime leaves behind (threads still spinning,
    caches it filled) would fall on that one alone."""
    names = list(calls)
    order = random.Random(0)
    repeats = {}
    with torch.inference_mode():
        for name in names:
            calls[name]()  # warm
            began = time.perf_counter()
            calls[name]()
            repeats[name] = max(1, int(slot_seconds / max(time.perf_counter() - began, 1e-6)))
        seconds: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            for name in order.sample(names, len(names)):
                began = time.perf_counter()
                for _ in range(repeats[name]):
                    calls[name]()
                seconds[name].append((time.perf_counter() - began) / repeats[name])
    return seconds


def run_case(name: str, quick: bool) -> list[str]:
    case = build(name, quick)
    print(f"measuring {case.name}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        calls, notes, outside = _prepare(case, Path(workdir), quick)
        for label, note in notes.items():
            print(f"  {label}: {note}", flush=True)
        seconds = time_interleaved(calls, ROUNDS[quick], SLOT_SECONDS[quick])
    eager = seconds["eager"]
    speedups = {n: paired_ratio_ci(eager, s)[0] for n, s in seconds.items()}
    peers = [n for n in seconds if n not in ("eager", "accel")]
    row = [case.name, f"{np.median(eager) * 1e3:.1f} ms", f"{speedups['accel']:.2f}x ({notes['accel'].split(';')[0]})"]
    row += [
        f"{speedups[label]:.2f}x" + ("*" if label in outside else "") if label in speedups else "-"
        for label, _, _ in PEERS
    ]
    within = [n for n in peers if n not in outside]
    fastest = max(peers, key=lambda n: speedups[n]) if peers else None
    best = max(within, key=lambda n: speedups[n]) if within else None
    return [*row, _ratio(seconds, best), _ratio(seconds, fastest) if fastest != best else "same"]


def _ratio(seconds: dict[str, list[float]], peer: str | None) -> str:
    """accel's speed over the peer's, with its 95% interval (paired rounds), and the peer."""
    if peer is None:
        return "-"
    ratio, (low, high) = paired_ratio_ci(seconds[peer], seconds["accel"])
    return f"{ratio:.2f} [{low:.2f}, {high:.2f}] vs {peer}"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    chosen = next((tuple(a.split("=", 1)[1].split(",")) for a in argv if a.startswith("--models=")), MODELS)
    torch.set_num_threads(THREADS)
    machine = describe_machine()
    header = [
        "model",
        "eager",
        "accel optimize (kept)",
        *(p[0] for p in PEERS),
        "accel / best peer within the guard [95% CI]",
        "accel / fastest peer at any fidelity",
    ]
    rows = []
    for name in chosen:
        rows.append(run_case(name, quick))
        print("  " + " | ".join(f"{h}: {v}" for h, v in zip(header, rows[-1])), flush=True)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(
        f"CPU: {machine.device_name} ({machine.cpu_class}; {', '.join(machine.isa_flags)}); {THREADS} threads each; "
        f"load average {' '.join(f'{v:.1f}' for v in _load())}; speedups over eager, interleaved in this run"
    )
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    print("*: outside accel's guard (the latency recipe's int8 rule; for generate, other tokens than eager's)")


def _load() -> tuple[float, ...]:
    try:
        import os

        return os.getloadavg()
    except OSError:
        return ()


if __name__ == "__main__":
    main()
