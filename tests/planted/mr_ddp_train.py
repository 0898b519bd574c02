"""Planted: a DDP training script (gloo, CPU) with an optional straggler rank.

--straggler input    rank --slow-rank's Dataset sleeps in __getitem__ (expected: straggler, data_loading)
--straggler compute  rank --slow-rank computes on each batch repeated several times (expected: straggler,
                     compute_bound); its data path is the same as the others'
--straggler none     every rank does the same work (expected: no straggler above low); with
                     --sample-seconds and a small --hidden, a step is mostly the same wait on every
                     rank, so a busy machine's scheduling noise stays small against it
--step-seconds-out DIR  each rank writes its steps' seconds, timed by the script itself, to
                     DIR/rank<N>.json (benchmarks/multirank.py compares plain torchrun with accel)
--trace-out DIR      also writes a torch.profiler trace per rank, the lines docs/multirank.md asks a
                     cluster job to add, for `accel profile --traces DIR`
"""

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

# The planted delays are several times a balanced step (a few ms here), so the verdict holds on a
# loaded 2-core machine.
SLOW_SAMPLE_SECONDS = 0.004
SLOW_WORK_FACTOR = 32


class Samples(Dataset):
    def __init__(self, count: int, slow: bool, sample_seconds: float) -> None:
        self.features = torch.randn(count, 64)
        self.labels = torch.randint(0, 4, (count,))
        self.seconds = sample_seconds + (SLOW_SAMPLE_SECONDS if slow else 0.0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        if self.seconds:
            time.sleep(self.seconds)
        return self.features[index], self.labels[index]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--straggler", choices=("none", "input", "compute"), default="none")
    parser.add_argument("--slow-rank", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--sample-seconds", type=float, default=0.0)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--trace-out", default=None)
    parser.add_argument("--step-seconds-out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group(backend="gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    slow = rank == args.slow_rank
    batch_size = args.batch_size
    repeats = SLOW_WORK_FACTOR if slow and args.straggler == "compute" else 1
    data = Samples(args.steps * batch_size, slow and args.straggler == "input", args.sample_seconds)
    hidden = args.hidden
    model = DistributedDataParallel(
        nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 4))
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
    marks = [time.perf_counter()]
    for features, labels in DataLoader(data, batch_size=batch_size):
        features, labels = features.repeat(repeats, 1), labels.repeat(repeats)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(features), labels).backward()
        optimizer.step()
        if profiler is not None:
            profiler.step()
        marks.append(time.perf_counter())
    if args.step_seconds_out:
        with open(os.path.join(args.step_seconds_out, f"rank{rank}.json"), "w") as out:
            json.dump([b - a for a, b in zip(marks, marks[1:])], out)
    if profiler is not None:
        profiler.stop()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
