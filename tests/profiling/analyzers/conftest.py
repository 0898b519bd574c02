"""Analyzer tests: profiles of planted pipelines run at one intra-op thread."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Two intra-op threads on a busy 2-core machine spin against other processes and make a 0.5 ms
    # step take 100 ms; one thread keeps the planted ratios stable (tests/conftest.py restores the count).
    torch.set_num_threads(1)
