"""Shared pieces of the training tests (test_train.py, test_mim.py, test_outputs.py)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is several times faster than two (no
    straggling OpenMP threads); the previous setting is restored for the other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def interrupt_after_first_epoch(monkeypatch: pytest.MonkeyPatch):
    """Ctrl-C right after epoch 1's resume.pt is saved, as a user would press it; returns the real save_resume."""
    from demoprof_ros.training import outputs

    original = outputs.save_resume

    def save_then_interrupt(path, state):
        original(path, state)
        if state["epoch"] == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "save_resume", save_then_interrupt)
    return original
