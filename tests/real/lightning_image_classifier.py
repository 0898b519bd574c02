"""Corpus: a PyTorch Lightning training script, written the way its docs write one: a
LightningModule with training_step and configure_optimizers, a DataLoader over a Dataset that
builds each image in Python (a slow augmentation, per pixel row), `L.Trainer(...).fit(...)` at the
top level with the DataLoader's default num_workers=0.

Lightning drives the loop (its own fetcher around the DataLoader); accel runs the file as a script
and times that loader against the steps. Expected: script mode, data_loading, cured by DataLoader
workers. Needs `lightning` (the test extra pins it; it installs without torchvision).

    python tests/real/lightning_image_classifier.py [IMAGES]

IMAGES (256 by default) sets the training set's size: a test passes fewer through accel
(`accel optimize lightning_image_classifier.py -- 160`), so each of the search's runs is shorter.
"""

import math
import sys
import tempfile

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

SIZE = 24


class Shapes(Dataset):
    """Images drawn row by row in Python: a ring whose radius is the label."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        label = index % 4
        radius = 3 + 2 * label
        rows = []
        for y in range(SIZE):
            row = []
            for x in range(SIZE):
                distance = math.hypot(x - SIZE / 2, y - SIZE / 2)
                row.append(math.exp(-((distance - radius) ** 2)) + 0.05 * math.sin(index * 7 + x * y))
            rows.append(row)
        for _ in range(3):  # a slow blur, also in Python
            rows = [[(r[max(x - 1, 0)] + r[x] + r[min(x + 1, SIZE - 1)]) / 3 for x in range(SIZE)] for r in rows]
        return torch.tensor(rows).unsqueeze(0), torch.tensor(label)


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 4)
        )

    def training_step(self, batch, batch_index):
        images, labels = batch
        return nn.functional.cross_entropy(self.net(images), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


torch.manual_seed(0)
trainer = L.Trainer(
    max_epochs=1,
    accelerator="cpu",
    devices=1,
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    default_root_dir=tempfile.mkdtemp(prefix="lightning-"),
)
trainer.fit(
    Classifier(), DataLoader(Shapes(int(sys.argv[1]) if len(sys.argv) > 1 else 256), batch_size=32, shuffle=True)
)
