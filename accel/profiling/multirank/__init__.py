"""Multi-rank jobs: launch a script under torchrun with accel's timing in each rank, or read the
per-rank Kineto traces of a cluster job, and merge the ranks into one report.

- launch: runs `torch.distributed.run` (N local ranks), stops every rank on failure or timeout;
- rank: what runs inside each rank (script mode, loader/collective/DDP timing, clock alignment);
- traces: reads per-rank torch.profiler traces (JSON or .json.gz) one event at a time;
- merge: per-rank results to a JobTimeline and the report.
"""
