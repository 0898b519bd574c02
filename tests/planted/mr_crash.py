"""Planted bad input for --nproc-per-node: rank 1 raises in its fourth step; rank 0 is left waiting
in the gradient all-reduce. Expected: the report names rank 1 and its error, rank 0 is stopped,
exit 2, no process left.
"""

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset

CRASH_STEP = 3

if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group(backend="gloo")
    model = DistributedDataParallel(nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = TensorDataset(torch.randn(640, 16), torch.randint(0, 2, (640,)))
    for step, (features, labels) in enumerate(DataLoader(data, batch_size=8)):
        if step == CRASH_STEP and dist.get_rank() == 1:
            raise RuntimeError("planted crash on rank 1")
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(features), labels).backward()
        optimizer.step()
    dist.destroy_process_group()
