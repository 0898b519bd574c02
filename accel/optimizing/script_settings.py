"""The points `accel optimize SCRIPT` searches: a DataLoader setting and the torch intra-op thread
count of the script's own process (workers and intra-op threads share the cores), and their labels."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from accel.optimizing.optimizers.loader_tune import Setting


@dataclasses.dataclass(frozen=True)
class ScriptSetting:
    """One point of the search: a DataLoader setting (None: what the script passed) and the torch
    intra-op thread count of the script's own process."""

    loader: Setting | None
    threads: int

    def params(self) -> dict[str, Any]:
        return {**(dataclasses.asdict(self.loader) if self.loader else {}), "threads": self.threads}


def own_setting(asked: dict[str, Any]) -> Setting:
    """What the script passed to its DataLoader, as a Setting."""
    return Setting(
        int(asked.get("num_workers") or 0),
        asked.get("prefetch_factor"),
        bool(asked.get("persistent_workers")),
        bool(asked.get("pin_memory")),
    )


def candidates(start: dict[str, Any], cores: int, threads: int) -> list[ScriptSetting]:
    """num_workers 0..cores (pinned memory where CUDA is) at the script's `threads`, and each
    setting with workers (the script's own too) at cores - workers threads where that is fewer;
    less the script's own setting at its own thread count."""
    pin = torch.cuda.is_available()
    own = own_setting(start)
    loaders = [Setting(w, None, False, pin) for w in range(cores + 1)]
    found: list[ScriptSetting] = []
    for loader in loaders + ([own] if own.num_workers and own not in loaders else []):
        counts = [threads] + ([max(1, cores - loader.num_workers)] if loader.num_workers else [])
        for count in counts:
            setting = ScriptSetting(loader, count)
            if count <= threads and setting not in found and not (loader == own and count == threads):
                found.append(setting)
    return found


def label(setting: ScriptSetting | None, asked: dict[str, Any], threads: int) -> str:
    """'as written (num_workers=0)', 'num_workers=2', 'num_workers=2, threads=1' (threads named when
    they differ from the script's own `threads`)."""
    if setting is None or setting.loader is None:
        text = f"as written (num_workers={asked.get('num_workers', 0)})"
    else:
        text = setting.loader.label()
    if setting is not None and setting.threads != threads:
        text += f", threads={setting.threads}"
    return text
