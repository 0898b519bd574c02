"""Planted (data-path optimizers): a stream of requests where most inputs repeat; a costly MLP.

64 requests, 8 distinct inputs. Expected: cache.results runs the model only for the 8 distinct
inputs (hit rate 56/64) and gives a speedup of several times.
"""

import torch
from torch import nn

import accel

torch.manual_seed(0)
DISTINCT = [torch.randn(512) for _ in range(8)]
REQUESTS = [DISTINCT[(i * 5) % 8] for i in range(64)]
model = nn.Sequential(
    nn.Linear(512, 2048),
    nn.ReLU(),
    nn.Linear(2048, 2048),
    nn.ReLU(),
    nn.Linear(2048, 2048),
    nn.ReLU(),
    nn.Linear(2048, 10),
).eval()

pipeline = accel.Pipeline(model=model, source=REQUESTS, batch_size=8, name="dp_repeats")
