"""`python -m benchmarks generate_loop`: eager `generate()` against accel's generate loop in ONNX Runtime
(`onnx.generate` fp32, `onnx.generate_int8`, both on the fused step with `onnx.generate_fused` and
`onnx.generate_fused_int8`, `onnx.generate_weight_only` 4- and 8-bit) and in
OpenVINO (`openvino.generate` fp32, `openvino.generate_int8`: NNCF int8 weights, and its int4_asym
mode), side by side in one run.

Per model: 32 greedy tokens after a 32-token prompt, batch 1, the KV cache on in eager generate()
(transformers' default, the fair baseline); the seconds per 32 tokens (median of interleaved rounds,
accel.core.measure.compare_interleaved, each ORT side against eager in its own comparison) with the
speedup and its 95% CI, whether the tokens are eager's (the guard's exact check), and the one-time
export. Rows: the corpus GPT-2 (tests/real/gpt2_lm.py, 4 layers of 256) and GPT-2 small (124M
parameters, 12 layers of 768) at random init, the issue's model; `--tiny` runs the first only,
`--small` the second only; `--only=NAME[,NAME...]` keeps the columns whose optimizer name starts
with one of them (`--only=onnx.generate,openvino`). Two torch intra-op threads and two ORT or
OpenVINO threads on each side. Weight-only pays only when the weights
are streamed from memory: GPT-2 small's 500 MB are beyond any L3, the corpus GPT-2's 14 MB are not
(applied here anyway, with the optimizer's "not applicable" reason in the notes).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import accel
from accel.core.machine import describe_machine
from accel.core.measure import compare_interleaved, thread_count
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config

NEW_TOKENS = 32
PROMPT = 32
THREADS = 2
# (column, optimizer, params)
VARIANTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ORT fp32", "onnx.generate", {}),
    ("ORT int8", "onnx.generate_int8", {}),
    ("ORT fused fp32", "onnx.generate_fused", {}),
    ("ORT fused int8", "onnx.generate_fused_int8", {}),
    ("ORT weight-only int4", "onnx.generate_weight_only", {"bits": 4}),
    ("ORT weight-only int8", "onnx.generate_weight_only", {"bits": 8}),
    ("OV fp32", "openvino.generate", {}),
    ("OV int8 weights", "openvino.generate_int8", {}),
    ("OV int4 weights", "openvino.generate_int8", {"mode": "int4_asym"}),
)


def _gpt2(layers: int, width: int, heads: int, vocab: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        vocab_size=vocab,
        n_positions=1024,
        bos_token_id=0,
        eos_token_id=None,
    )
    return GPT2LMHeadModel(config).eval()


def _generate(model: Any, ids: torch.Tensor) -> torch.Tensor:
    return model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True, pad_token_id=0)


def _cell(comparison: Any) -> str:
    low, high = comparison.speedup_ci
    return f"{comparison.candidate.median * 1e3:.0f} ms {comparison.speedup:.2f}x [{low:.2f}, {high:.2f}]"


def chosen_variants(argv: list[str]) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """The columns `--only=NAME[,NAME...]` keeps (optimizer-name prefixes), all without it."""
    given = [arg.removeprefix("--only=") for arg in argv if arg.startswith("--only=")]
    if not given:
        return VARIANTS
    prefixes = tuple(given[-1].split(","))
    return tuple(variant for variant in VARIANTS if variant[1].startswith(prefixes))


def row(label: str, model: GPT2LMHeadModel, context: Context, variants: tuple) -> tuple[str, ...]:
    ids = torch.randint(1, model.config.vocab_size, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    pipeline = accel.Pipeline(model=model, inputs=(ids,), generate=_generate, name=label.split()[0])

    def eager() -> torch.Tensor:
        with torch.inference_mode():
            return pipeline.forward((ids,))

    cells, notes, baseline = [], [], None
    for column, name, params in variants:
        optimizer = OPTIMIZERS.get(name)
        applied = optimizer.apply(pipeline, make_config(optimizer, {"threads": THREADS, **params}), context)
        looped = applied.pipeline

        def candidate(looped: accel.Pipeline = looped) -> torch.Tensor:
            return looped.forward((ids,))

        comparison = compare_interleaved(eager, candidate, warmup=2, min_rounds=7, budget_seconds=40)
        baseline = comparison.baseline.median
        cells.append(_cell(comparison))
        same = torch.equal(candidate(), eager())
        notes.append(f"{column}: {'same tokens' if same else 'OTHER TOKENS'}, export {applied.setup_seconds:.1f} s")
        if params.get("bits") == 4:
            reason = optimizer.applicable(pipeline, context)
            notes.append(f"weight-only {'applicable' if reason is None else 'not applicable: ' + reason.split(':')[0]}")
        if "compressed_matmuls" in applied.notes:
            notes.append(f"{column}: {applied.notes['compressed_matmuls']} matmuls on compressed weights")
    return (label, f"{(baseline or 0.0) * 1e3:.0f} ms", *cells, "; ".join(notes))


def main() -> None:
    context = Context(machine=describe_machine(), workdir=Path(tempfile.mkdtemp(prefix="accel-bench-")))
    models = []
    if "--small" not in sys.argv:
        models.append(("gpt2 tiny (corpus: 4 x 256)", lambda: _gpt2(4, 256, 4, 1024)))
    if "--tiny" not in sys.argv:
        models.append(("gpt2 small (12 x 768, 124M)", lambda: _gpt2(12, 768, 12, 50257)))
    variants = chosen_variants(sys.argv)
    with thread_count(THREADS):
        rows = [row(label, build(), context, variants) for label, build in models]
    header = ("model", f"eager/{NEW_TOKENS} tok", *(f"{column} [95% CI]" for column, _, _ in variants), "notes")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    print(
        f"machine: {context.machine.cores} usable cores (load average {os.getloadavg()[0]:.1f} when done), "
        f"torch {torch.__version__}, {THREADS} threads each side, batch 1, prompt {PROMPT}, greedy, cache on"
    )
    for line in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip())


if __name__ == "__main__":
    main()
