"""A scoring service replaying a log of requests: JSON feature vectors, many of them repeated.

Real request streams are skewed: a few popular queries come back again and again (here, 256
requests drawn from 24 distinct queries with Zipf-like popularity). The ranking model, a wide
MLP, recomputes every one of them. `accel profile examples/request_stream.py` names
repeated_inputs; a result cache keyed by the input's content is the cure.
"""

import json
import random

import torch
from torch import nn

import accel

FEATURES = 512
DISTINCT_QUERIES = 24


def make_requests(count: int = 256, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    queries = [
        json.dumps({"query_id": q, "features": [round(rng.uniform(-1, 1), 4) for _ in range(FEATURES)]})
        for q in range(DISTINCT_QUERIES)
    ]
    popularity = [1.0 / (rank + 1) for rank in range(DISTINCT_QUERIES)]
    return rng.choices(queries, weights=popularity, k=count)


def parse(request: str) -> torch.Tensor:
    return torch.tensor(json.loads(request)["features"], dtype=torch.float32)


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, 2048),
        nn.ReLU(),
        nn.Linear(2048, 2048),
        nn.ReLU(),
        nn.Linear(2048, 2048),
        nn.ReLU(),
        nn.Linear(2048, 1),
    ).eval()


def pipeline() -> accel.Pipeline:
    return accel.Pipeline(
        model=make_model(), source=make_requests(), decode=parse, batch_size=8, postprocess=lambda score: float(score)
    )
