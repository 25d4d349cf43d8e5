"""The `capture_log` fixture (conftest.py) sees log records whatever logging class is installed.

ROS 2's `launch` installs a logger class whose loggers do not propagate (launch.logging.LaunchLogger); under
`colcon test` it is imported by launch_testing's plugin before the tests, and plain caplog then sees nothing.
"""
from __future__ import annotations

import logging
import uuid

import pytest


class NonPropagatingLogger(logging.getLoggerClass()):
    """What launch.logging.LaunchLogger does to every logger created after `import launch`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.propagate = False


@pytest.fixture
def launch_like_loggers():
    """Install the non-propagating class, as `import launch` does, and give a fresh parent/child logger pair."""
    previous = logging.getLoggerClass()
    logging.setLoggerClass(NonPropagatingLogger)
    try:
        name = f"demoprof_ros.test_capture_{uuid.uuid4().hex[:8]}"
        parent, child = logging.getLogger(name), logging.getLogger(name + ".child")
    finally:
        logging.setLoggerClass(previous)
    assert isinstance(child, NonPropagatingLogger) and not child.propagate
    return parent, child


def test_plain_caplog_misses_non_propagating_loggers(launch_like_loggers, caplog) -> None:
    """The failure mode that capture_log exists for (if this stops holding, the fixture is no longer needed)."""
    parent, child = launch_like_loggers
    caplog.set_level(logging.INFO, logger=parent.name)
    child.warning("lost")
    assert "lost" not in caplog.text


def test_capture_log_sees_parent_and_child_once(launch_like_loggers, capture_log) -> None:
    parent, child = launch_like_loggers
    caplog = capture_log(parent.name, logging.INFO)
    parent.info("from the parent")
    child.warning("from the child")
    child.debug("below the level")
    assert [r.getMessage() for r in caplog.records] == ["from the parent", "from the child"]


def test_capture_log_counts_propagating_records_once(capture_log) -> None:
    logger = logging.getLogger(f"demoprof_ros.test_capture_{uuid.uuid4().hex[:8]}")
    assert logger.propagate  # the ordinary class: caplog's root handler would see it too
    caplog = capture_log(logger.name, logging.INFO)
    logger.info("once")
    assert [r.getMessage() for r in caplog.records] == ["once"]


def test_the_core_is_heard_when_nothing_propagates(monkeypatch, capture_log) -> None:
    """A real core logger made non-propagating, as it is when created after `import launch`."""
    from demoprof_ros.core.models import load_model

    for name in ("demoprof_ros", "demoprof_ros.core", "demoprof_ros.core.models"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", False)
    caplog = capture_log("demoprof_ros.core.models", logging.WARNING)
    load_model("tiny")
    assert "UNTRAINED MODEL" in caplog.text
