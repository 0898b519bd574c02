"""A tiny GPT-like decoder generating text greedily for four prompts at once, with no KV cache.

`generate` feeds the whole sequence back into the model for every new token, so step t recomputes
attention and MLPs over all t tokens of the prefix: per-step latency rises with the position.
`accel profile examples/decoder_lm.py` names generation, with the slope and the share of step
time a KV cache would save.
"""

import torch
from torch import nn

import accel

VOCAB = 512
DIM = 256
HEADS = 4
LAYERS = 4
MAX_LENGTH = 128
PROMPT_LENGTH = 16
NEW_TOKENS = 48
BATCH = 4


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(DIM)
        self.attention = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
        self.norm2 = nn.LayerNorm(DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class DecoderLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.position = nn.Embedding(MAX_LENGTH, DIM)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        x = self.embed(ids) + self.position(torch.arange(length, device=ids.device))
        mask = torch.triu(torch.full((length, length), float("-inf"), device=ids.device), diagonal=1)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x))


def generate(model: DecoderLM, ids: torch.Tensor, new_tokens: int = NEW_TOKENS) -> torch.Tensor:
    """Greedy decoding without a cache: the whole sequence goes through the model every step."""
    for _ in range(new_tokens):
        logits = model(ids)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


torch.manual_seed(0)
model = DecoderLM().eval()
# Four prompts at once: per-step compute grows with the batch while per-call dispatch does not, so
# the recomputed prefix, not Python, is what the loop spends its time on, on any CPU.
prompt = torch.randint(0, VOCAB, (BATCH, PROMPT_LENGTH))
pipeline = accel.Pipeline(model=model, inputs=(prompt,), generate=generate, name="decoder_lm")
