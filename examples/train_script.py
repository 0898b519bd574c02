"""A plain training script: a tabular dataset stored as CSV text, parsed per sample in __getitem__.

Nothing here knows about accel. Parsing 1,024 numbers from text and augmenting them in Python for every sample costs
far more than a step of the small MLP, so the loop mostly waits for the DataLoader:
`accel profile examples/train_script.py -- --epochs 1` names data_loading.

    python examples/train_script.py --epochs 2 --workers 0
"""

import argparse
import random

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

FEATURES = 1024
CLASSES = 10


def make_rows(count: int, seed: int = 0) -> list[str]:
    """Rows as they would come from a CSV file: a label, then the features."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.randrange(CLASSES)
        values = [f"{rng.gauss(label / CLASSES, 1.0):.5f}" for _ in range(FEATURES)]
        rows.append(",".join([str(label), *values]))
    return rows


class CsvRows(Dataset):
    def __init__(self, rows: list[str]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        label, *values = self.rows[index].split(",")
        features = [float(v) for v in values]
        # Augmentation and standardization per feature, in Python: the kind of code that ends up
        # in datasets, and costs a millisecond or more per sample.
        noisy = [v + 0.01 * ((i * 7919 + index) % 13 - 6) for i, v in enumerate(features)]
        clipped = [min(max(v, -3.0), 3.0) for v in noisy]
        mean = sum(clipped) / len(clipped)
        std = (sum((v - mean) ** 2 for v in clipped) / len(clipped)) ** 0.5 or 1.0
        return torch.tensor([(v - mean) / std for v in clipped]), int(label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(0)
    loader = DataLoader(
        CsvRows(make_rows(args.rows)), batch_size=args.batch_size, shuffle=True, num_workers=args.workers
    )
    net = nn.Sequential(nn.Linear(FEATURES, 128), nn.ReLU(), nn.Linear(128, CLASSES))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(args.epochs):
        total = 0.0
        for features, labels in loader:
            optimizer.zero_grad()
            loss = loss_fn(net(features), labels)
            loss.backward()
            optimizer.step()
            total += loss.item()
        print(f"epoch {epoch}: mean loss {total / len(loader):.4f}")


if __name__ == "__main__":
    main()
