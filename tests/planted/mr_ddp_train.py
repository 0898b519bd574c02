"""Planted: a DDP training script (gloo, CPU) with an optional straggler rank.

--straggler input    rank --slow-rank's Dataset sleeps in __getitem__ (expected: straggler, data_loading)
--straggler compute  rank --slow-rank gets batches several times larger (expected: straggler, compute_bound)
--straggler none     every rank does the same work (expected: no straggler above low)
--trace-out DIR      also writes a torch.profiler trace per rank, the lines docs/multirank.md asks a
                     cluster job to add, for `accel profile --traces DIR`
"""

import argparse
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

# The planted delays are several times a balanced step (a few ms here), so the verdict holds on a
# loaded 2-core machine.
SLOW_SAMPLE_SECONDS = 0.004
SLOW_BATCH_FACTOR = 16


class Samples(Dataset):
    def __init__(self, count: int, slow: bool) -> None:
        self.features = torch.randn(count, 64)
        self.labels = torch.randint(0, 4, (count,))
        self.slow = slow

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        if self.slow:
            time.sleep(SLOW_SAMPLE_SECONDS)
        return self.features[index], self.labels[index]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--straggler", choices=("none", "input", "compute"), default="none")
    parser.add_argument("--slow-rank", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--trace-out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group(backend="gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    slow = rank == args.slow_rank
    batch_size = args.batch_size * (SLOW_BATCH_FACTOR if slow and args.straggler == "compute" else 1)
    data = Samples(args.steps * batch_size, slow=slow and args.straggler == "input")
    model = DistributedDataParallel(
        nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 4))
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    profiler = None
    if args.trace_out:
        # The few lines docs/multirank.md asks a training script to add.
        profiler = torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU],
            schedule=torch.profiler.schedule(wait=1, warmup=1, active=args.steps - 3),
            on_trace_ready=torch.profiler.tensorboard_trace_handler(args.trace_out, worker_name=f"rank{rank}"),
        )
        profiler.start()
    for features, labels in DataLoader(data, batch_size=batch_size):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(features), labels).backward()
        optimizer.step()
        if profiler is not None:
            profiler.step()
    if profiler is not None:
        profiler.stop()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
