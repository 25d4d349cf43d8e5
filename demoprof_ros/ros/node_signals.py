"""Ctrl-C / SIGTERM for the node's main(): noted, never acted on in the middle of configure or teardown."""
from __future__ import annotations

import signal
import threading


class StopRequest(threading.Event):
    """Set by the first SIGINT / SIGTERM; later ones change nothing, so cleanup cannot be cut short.

    rclpy's own handler would shut the context down at once, under a loading model or a publishing worker.
    """

    def __init__(self) -> None:
        super().__init__()
        self.signal: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "shutdown"

    def _handle(self, number: int, _frame: object) -> None:
        if self.signal is None:
            self.signal = number
        self.set()

    @staticmethod
    def ignore_from_now_on() -> None:
        """For teardown: SIG_IGN, which (unlike a Python handler) outlives interpreter finalization, where a
        late Ctrl-C would otherwise end the process with -2 and leave Fast DDS files in /dev/shm."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)

    @classmethod
    def install(cls) -> "StopRequest":
        """A StopRequest receiving SIGINT and SIGTERM (outside the main thread, as in tests: receiving none)."""
        stop = cls()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, stop._handle)
        return stop
