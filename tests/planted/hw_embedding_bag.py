"""Planted: a DLRM-style recommender. Each sample looks up 8 sparse features, 4 ids each, in one
large EmbeddingBag table (320,000 rows x 32 fp32 = 41 MB) and feeds the pooled vectors with its
dense features to a small MLP. A lookup reads only the rows its ids pick (here 4 x 8 x 64 rows of
128 bytes per batch, 262 KB), not the table: counting the table would put 41 MB behind every call."""

import torch
from torch import nn

ROWS, DIM = 320_000, 32
FEATURES, IDS_PER_FEATURE, DENSE = 8, 4, 13
BATCH = 64


class Recommender(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = nn.EmbeddingBag(ROWS, DIM, mode="sum")
        self.bottom = nn.Sequential(nn.Linear(DENSE, DIM), nn.ReLU())
        self.top = nn.Sequential(nn.Linear(DIM * (FEATURES + 1), 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, dense: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        # ids: (batch, FEATURES, IDS_PER_FEATURE) -> one bag per (sample, feature)
        pooled = self.table(ids.reshape(-1, IDS_PER_FEATURE)).reshape(ids.shape[0], FEATURES * DIM)
        return torch.sigmoid(self.top(torch.cat([self.bottom(dense), pooled], dim=1)))


model = Recommender().eval()
_generator = torch.Generator().manual_seed(1)
example_inputs = (
    torch.randn(BATCH, DENSE, generator=_generator),
    torch.randint(0, ROWS, (BATCH, FEATURES, IDS_PER_FEATURE), generator=_generator),
)
