"""Session-wide test settings: offline, loopback-only DDS on a random domain, shared fixtures."""
from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Callable

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


@pytest.fixture
def capture_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
                ) -> Callable[[str, int], pytest.LogCaptureFixture]:
    """caplog for one logger and its children, whatever the logging class: `capture_log("demoprof_ros.core")`.

    caplog listens on the root logger, so it sees nothing from a logger that does not propagate, and ROS 2's
    `launch` (imported by launch_testing under `colcon test`) makes every logger created after it a
    LaunchLogger with propagate=False. Here caplog's handler goes onto the logger under test and its existing
    children themselves, which stop propagating until the test ends so that no record is counted twice.
    """
    def capture(name: str, level: int = logging.INFO) -> pytest.LogCaptureFixture:
        caplog.set_level(level, logger=name)
        loggers = [logging.getLogger(name)] + [
            logger for key, logger in logging.Logger.manager.loggerDict.items()
            if key.startswith(name + ".") and isinstance(logger, logging.Logger)]
        for logger in loggers:
            monkeypatch.setattr(logger, "handlers", [*logger.handlers, caplog.handler])  # restored at teardown
            monkeypatch.setattr(logger, "propagate", False)
        return caplog
    return capture
