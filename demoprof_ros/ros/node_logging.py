"""Logging for the node that can neither raise nor be flooded from the wire.

rclpy loggers remember, per call site, the severity (and throttle / once options) first used there; logging
from the same line at another severity raises `ValueError: Logger severity cannot be changed between
calls`. That once ended the inference thread on the first bad frame after a warning. `SafeLogger` gives
each severity its own call site and falls back to stderr if the ROS logger fails anyway. `KeyedThrottle`
limits each kind of fault to one line per period; kinds are fixed categories chosen by the code (never text
from a message), and their number is capped, so varying strings cannot bypass it nor grow its tables.
"""
from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Callable

LEVELS = ("debug", "info", "warning", "error")


class SafeLogger:
    """An rclpy logger behind one call site per severity; a failing log call never raises."""

    def __init__(self, ros_logger: Any) -> None:
        self.ros_logger = ros_logger
        self.failures = 0

    def debug(self, message: str) -> None:
        try:
            self.ros_logger.debug(message)
        except Exception as exc:
            self._fallback("DEBUG", message, exc)

    def info(self, message: str) -> None:
        try:
            self.ros_logger.info(message)
        except Exception as exc:
            self._fallback("INFO", message, exc)

    def warning(self, message: str) -> None:
        try:
            self.ros_logger.warning(message)
        except Exception as exc:
            self._fallback("WARN", message, exc)

    def error(self, message: str) -> None:
        try:
            self.ros_logger.error(message)
        except Exception as exc:
            self._fallback("ERROR", message, exc)

    def log(self, level: str, message: str) -> None:
        """Log at `level` (one of LEVELS; anything else logs as an error)."""
        getattr(self, level if level in LEVELS else "error")(message)

    def _fallback(self, level: str, message: str, exc: Exception) -> None:
        self.failures += 1
        try:
            sys.stderr.write(f"[{level}] {message} (ROS logger failed: {type(exc).__name__})\n")
        except Exception:  # stderr closed: nothing more can be done, and nothing may raise
            pass


class KeyedThrottle:
    """Log each kind of fault at most once per period (rclpy throttles per call site, hiding other kinds).

    At most `max_keys` kinds are tracked; further kinds share one "other" entry, so the tables stay bounded
    whatever the keys are. Digits in a key are ignored ("data has 10 bytes" and "... 11 bytes" are one kind).
    """

    OTHER = "(other)"

    def __init__(self, period_s: float = 5.0, max_keys: int = 32) -> None:
        self.period_s = period_s
        self.max_keys = max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def check(self, kind: str) -> tuple[bool, int]:
        """(log it now?, how many of this kind were suppressed since it was last logged)."""
        key = re.sub(r"\d+", "N", kind[:80])
        if key not in self._last and len(self._last) >= self.max_keys:
            key = self.OTHER
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.period_s:
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        return False, 0

    def __len__(self) -> int:
        return len(self._last)


class RclpyLogHandler(logging.Handler):
    """Sends the core's `logging` records (model and detector choices, warnings) to the node's ROS logger."""

    def __init__(self, logger: SafeLogger, rewrite: Callable[[str], str] = lambda text: text) -> None:
        super().__init__()
        self.logger = logger
        self.rewrite = rewrite  # e.g. profiler_node.cli_hints

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.rewrite(record.getMessage())
        except Exception:  # a bad format string in a record must not take the node down
            self.handleError(record)
            return
        if record.levelno >= logging.ERROR:
            self.logger.error(text)
        elif record.levelno >= logging.WARNING:
            self.logger.warning(text)
        elif record.levelno >= logging.INFO:
            self.logger.info(text)
        else:
            self.logger.debug(text)
