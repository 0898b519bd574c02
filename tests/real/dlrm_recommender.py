"""A DLRM-style click-through recommender: embedding-bag lookups into tables far beyond the cache.

Each sample is a dict: a row of `dense` features and, per `sparse` feature, a bag of categorical ids (a user's
recent items, say). A bottom MLP embeds the dense features; each sparse feature sums the rows its
ids pick from its own `nn.EmbeddingBag` table; the pairwise dot products of those vectors and the
dense one feed a top MLP that predicts a click probability (after Naumov et al., "Deep Learning
Recommendation Model", 2019). The tables hold 128 MB at random init (4 x 125,000 rows of 64
float32), four times a server CPU's last level cache, while the MLPs hold 60 KB: gathering rows
from memory is the cost, and storing the rows in int8 (`quantize.embedding`) is the cure.

`pipeline(rows=...)` builds the same model with other table sizes: with a few thousand rows the
tables sit in the cache and there is no embedding problem (the control).
"""

import torch
from torch import nn

import accel

DENSE_FEATURES = 13
SPARSE_FEATURES = 4
ROWS = 125_000
EMBEDDING_DIM = 64
BAG_SIZE = 40
BATCH_SIZE = 512
SAMPLES = 2048
# Rows drawn with this spread keep the pairwise dot products of the pooled bags near 1 (a bag sums
# BAG_SIZE rows of EMBEDDING_DIM values), so the top MLP's sigmoid is not saturated at random init.
TABLE_STD = (BAG_SIZE * EMBEDDING_DIM**0.5) ** -0.5


class Recommender(nn.Module):
    def __init__(self, rows: int) -> None:
        super().__init__()
        self.bottom = nn.Sequential(nn.Linear(DENSE_FEATURES, 64), nn.ReLU(), nn.Linear(64, EMBEDDING_DIM), nn.ReLU())
        self.tables = nn.ModuleList(nn.EmbeddingBag(rows, EMBEDDING_DIM, mode="sum") for _ in range(SPARSE_FEATURES))
        vectors = SPARSE_FEATURES + 1
        pairs = vectors * (vectors - 1) // 2
        self.top = nn.Sequential(nn.Linear(EMBEDDING_DIM + pairs, 64), nn.ReLU(), nn.Linear(64, 1))
        self.pair_rows, self.pair_cols = torch.triu_indices(vectors, vectors, offset=1)

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        bottom = self.bottom(dense)
        pooled = [table(sparse[:, i]) for i, table in enumerate(self.tables)]
        vectors = torch.stack([bottom, *pooled], dim=1)
        dots = torch.bmm(vectors, vectors.transpose(1, 2))[:, self.pair_rows, self.pair_cols]
        return torch.sigmoid(self.top(torch.cat([bottom, dots], dim=1)))


def make_samples(rows: int, count: int = SAMPLES, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    dense = torch.rand(count, DENSE_FEATURES, generator=g)
    sparse = torch.randint(0, rows, (count, SPARSE_FEATURES, BAG_SIZE), generator=g)
    return [{"dense": dense[i], "sparse": sparse[i]} for i in range(count)]


def build_model(rows: int = ROWS) -> Recommender:
    torch.manual_seed(0)
    model = Recommender(rows).eval()
    with torch.no_grad():
        for table in model.tables:
            table.weight.normal_(0.0, TABLE_STD)
    return model


def pipeline(rows: int = ROWS) -> accel.Pipeline:
    return accel.Pipeline(
        model=build_model(rows), source=make_samples(rows), batch_size=BATCH_SIZE, name="dlrm_recommender"
    )
