"""Shared fixtures: the ../shared folder (skip cleanly without it), tiny models, real images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(os.environ.get("RTMDET_EDGE_SHARED", Path(__file__).resolve().parents[2] / "shared"))
OFFICIAL = SHARED / "fixtures" / "official"
DATA = SHARED / "data"

# Under CI the shared folder is part of the contract: its absence fails the run instead of skipping half the suite.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_sessionstart(session: pytest.Session) -> None:
    if IN_CI and not SHARED.is_dir():
        raise pytest.UsageError(f"CI=true but {SHARED} is missing: CI must run with ../shared beside the clone")


# Tests run on 2 cores next to other work: keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def _need(path: Path) -> Path:
    if not path.exists():
        if IN_CI:
            pytest.fail(f"{path} not found under CI (the shared folder must be complete there)")
        pytest.skip(f"{path} not found: the shared fixtures/data folder must sit beside the repository")
    return path


@pytest.fixture(scope="session")
def official_dir() -> Path:
    return _need(OFFICIAL)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _need(DATA)


@pytest.fixture(scope="session")
def official_tiny(official_dir: Path):
    """The official RTMDet-tiny fixture model (random weights in the official layout), eval mode."""
    from rtmdet_edge import load_checkpoint

    return load_checkpoint(official_dir / "rtmdet_tiny" / "checkpoint.pth").eval()


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (so fusion and parity tests mean something)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) * 0.6 - 0.3)
    return model


@pytest.fixture
def one_thread():
    """Run a test single-threaded (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
