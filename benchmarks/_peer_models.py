"""The models of `python -m benchmarks peers`, at random init: BERT-base (batch 1 and 16, seq 128), a
ResNet-50 written from plain torch modules (torchvision is not a dependency), GPT-2 small's forward
and its generate() of 32 tokens with the KV cache, the wide MLP of examples/wide_mlp.py, each at
full size or, for the smoke test, tiny; and the corpus's padded BERT stream (tests/real/bert_padded.py
as it is: its 96 long-tailed sequences padded to the longest of each batch of 16), timed over the
whole stream. (A helper module: its leading underscore keeps it off the list of benchmarks.)

A model is a `Case`: the torch module, the batch it is called on, whether it is a transformer (ORT's
fusions and NNCF's transformer scheme apply) and, for one, ORT's fusion set and shape.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]
    # The forward's parameter names for `inputs` (a transformers model is called by keyword); () positional.
    keywords: tuple[str, ...] = ()
    fusion_type: str | None = None  # ORT's transformer fusion set ("bert", "gpt2"), None for others
    num_heads: int = 0
    hidden_size: int = 0
    new_tokens: int = 0  # > 0: the case is generate() of this many greedy tokens, KV cache on
    # A pipeline over a stream: each side is timed over its whole run (Pipeline.run), every padded
    # batch through the side's model, and the graphs keep batch and sequence axes dynamic.
    stream: Any = None

    @property
    def batch(self) -> Any:
        """The batch as accel's Pipeline takes it: keywords as a dict, else the tuple."""
        return dict(zip(self.keywords, self.inputs)) if self.keywords else self.inputs

    def generate(self, model: Any, ids: torch.Tensor) -> torch.Tensor:
        return model.generate(ids, max_new_tokens=self.new_tokens, do_sample=False, use_cache=True, pad_token_id=0)

    def call(self, model: Any, inputs: tuple[torch.Tensor, ...] | None = None) -> Any:
        inputs = self.inputs if inputs is None else inputs
        if self.new_tokens:
            return self.generate(model, *inputs)
        return model(**dict(zip(self.keywords, inputs))) if self.keywords else model(*inputs)


class Bottleneck(nn.Module):
    """ResNet's bottleneck block (1x1, 3x3, 1x1 convolutions, batch norm, a residual)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
            if stride != 1 or inplanes != out
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNet(nn.Module):
    """ResNet-50's layout (3, 4, 6, 3 bottlenecks) at a chosen width; `width=64` is ResNet-50."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), width: int = 64, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        blocks: list[nn.Module] = []
        inplanes = width
        for stage, count in enumerate(layers):
            planes = width * 2**stage
            for index in range(count):
                blocks.append(Bottleneck(inplanes, planes, stride=2 if index == 0 and stage > 0 else 1))
                inplanes = planes * Bottleneck.expansion
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(inplanes, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# With an explicit attention mask: without one, transformers 5 looks for packed sequences with
# aten::diff, which the TorchScript exporter (the one ORT's fusions match) and OpenVINO cannot convert.
TEXT_KEYWORDS = ("input_ids", "attention_mask")


def bert(quick: bool, batch: int = 1) -> Case:
    from transformers import BertConfig, BertModel

    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if quick else {}
    config = BertConfig(**size, attn_implementation="eager")
    length = 16 if quick else 128
    ids = torch.randint(1, config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    return Case(
        f"BERT-base, batch {batch}, seq 128" if not quick else f"BERT (tiny, batch {batch})",
        BertModel(config).eval(),
        (ids, torch.ones_like(ids)),
        TEXT_KEYWORDS,
        "bert",
        config.num_attention_heads,
        config.hidden_size,
    )


def gpt2(quick: bool) -> Case:
    from transformers import GPT2Config, GPT2LMHeadModel

    size = dict(n_embd=64, n_layer=2, n_head=2, vocab_size=500, n_positions=64) if quick else {}
    config = GPT2Config(**size, use_cache=False, attn_implementation="eager")
    length = 16 if quick else 128
    ids = torch.randint(0, config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
    name = "GPT-2 small forward, batch 1, seq 128" if not quick else "GPT-2 (tiny)"
    model = GPT2LMHeadModel(config).eval()
    return Case(name, model, (ids, torch.ones_like(ids)), TEXT_KEYWORDS, "gpt2", config.n_head, config.n_embd)


def bert16(quick: bool) -> Case:
    return bert(quick, batch=16)


# The generate case: a 32-token prompt, 32 greedy tokens.
GENERATE_PROMPT = 32
GENERATE_TOKENS = 32


def gpt2_generate(quick: bool) -> Case:
    """GPT-2 small generating with its KV cache (eos off, so every side runs all its tokens)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    size = dict(n_embd=64, n_layer=2, n_head=2, vocab_size=500) if quick else {}
    config = GPT2Config(**size, n_positions=1024, bos_token_id=0, eos_token_id=None)
    length, tokens = (8, 8) if quick else (GENERATE_PROMPT, GENERATE_TOKENS)
    ids = torch.randint(1, config.vocab_size, (1, length), generator=torch.Generator().manual_seed(0))
    name = f"GPT-2 small, generate {tokens} tokens, cache on" if not quick else "GPT-2 generate (tiny)"
    model = GPT2LMHeadModel(config).eval()
    return Case(
        name, model, (ids,), fusion_type="gpt2", num_heads=config.n_head, hidden_size=config.n_embd, new_tokens=tokens
    )


def resnet(quick: bool) -> Case:
    model = ResNet((1, 1, 1, 1), width=8, classes=10) if quick else ResNet()
    image = 32 if quick else 224
    name = "ResNet-50, batch 1, 224x224" if not quick else "ResNet (tiny)"
    return Case(name, model.eval(), (torch.randn(1, 3, image, image, generator=torch.Generator().manual_seed(0)),))


def wide_mlp(quick: bool) -> Case:
    widths = (256, 512, 512, 256) if quick else (2048, 4096, 4096, 2048)
    layers: list[nn.Module] = []
    for index, (a, b) in enumerate(zip(widths, widths[1:])):
        layers += [nn.Linear(a, b)] + ([nn.ReLU()] if index < len(widths) - 2 else [])
    name = "wide MLP (134 MB fp32), batch 1" if not quick else "MLP (tiny)"
    return Case(name, nn.Sequential(*layers).eval(), (torch.randn(1, widths[0]),))


CORPUS_FILE = Path(__file__).resolve().parent.parent / "tests" / "real" / "bert_padded.py"


def corpus(quick: bool) -> Case:
    """The corpus's padded BERT stream, as its file defines it (its size is already small)."""
    import accel

    pipeline = accel.load(CORPUS_FILE)
    ids = pipeline.example_batch()
    config = pipeline.model.config
    return Case(
        "corpus: padded BERT stream (tests/real/bert_padded.py), 96 sequences",
        pipeline.model,
        (ids["input_ids"], ids["attention_mask"]),
        TEXT_KEYWORDS,
        "bert",
        config.num_attention_heads,
        config.hidden_size,
        stream=pipeline,
    )


BUILDERS = {
    "bert": bert,
    "bert16": bert16,
    "resnet": resnet,
    "gpt2": gpt2,
    "gpt2_generate": gpt2_generate,
    "wide_mlp": wide_mlp,
    "corpus": corpus,
}


def build(name: str, quick: bool) -> Case:
    torch.manual_seed(0)
    return BUILDERS[name](quick)
