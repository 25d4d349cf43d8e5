"""Session-wide test settings: offline, loopback-only DDS on a random domain, shared fixtures."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = Path(__file__).resolve().parent / "data"

# Set before anything imports huggingface_hub, open_clip or rclpy.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(ROOT / "config" / "fastdds_localhost.xml")
os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"


def shared_data_dir() -> Path | None:
    """../shared/data beside the checkout, or $DEMOPROF_DATA; None when absent."""
    candidates = [os.environ.get("DEMOPROF_DATA"), str(ROOT.parent / "shared" / "data")]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data sets; tests that need them skip with a reason where absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared data not found: set DEMOPROF_DATA or put ../shared/data beside the checkout")
    return path


@pytest.fixture(scope="session")
def test_data() -> Path:
    return TEST_DATA
