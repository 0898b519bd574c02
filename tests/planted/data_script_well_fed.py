"""Planted: a training script whose DataLoader serves ready tensors; the step does the work.

Expected in script mode: no data_loading above low severity.
"""

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

if __name__ == "__main__":
    epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(256, 256), torch.randint(0, 4, (256,)))
    net = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 4))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    for _ in range(epochs):
        for features, labels in DataLoader(data, batch_size=32):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(features), labels).backward()
            optimizer.step()
