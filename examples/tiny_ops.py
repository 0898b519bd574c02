"""Many tiny ops: 48 residual blocks of a 32-wide Linear, tanh and centering on one sample.

Each op does almost no arithmetic, so the time goes to dispatching ~250 eager ops per call; a runtime
that executes a whole optimized graph (ONNX Runtime) or fuses it (torch.compile) wins many times.
"""

import torch
from torch import nn

WIDTH, DEPTH = 32, 48


class TinyOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.tanh(layer(x)) * 0.5 + x
            x = x - x.mean(-1, keepdim=True)
        return x


model = TinyOps().eval()
example_inputs = (torch.randn(1, WIDTH),)
