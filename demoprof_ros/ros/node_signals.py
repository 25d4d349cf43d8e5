"""Signals around the node's start and stop: a stop asked for while configuring, and cleanup that a second
Ctrl-C cannot cut short."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


def ignore_signals() -> None:
    """Once stopping, further Ctrl-C / SIGTERM must not cut the cleanup short (it would leave Fast DDS
    shared-memory files in /dev/shm)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (ValueError, OSError):  # not the main thread (tests run main() in-process)
            pass


@contextlib.contextmanager
def signals_deferred() -> Iterator[list[int]]:
    """Ctrl-C / SIGTERM while configuring are only noted (the list), then acted on once configure returns.

    rclpy's own handler would shut the context down under the loading model, and configure would then fail
    with a burst of errors from every publisher it creates; a deferred stop exits cleanly instead.
    """
    from rclpy.signals import (
        SignalHandlerOptions, get_current_signal_handlers_options, install_signal_handlers,
        uninstall_signal_handlers,
    )

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    options = get_current_signal_handlers_options()
    uninstall_signal_handlers()
    previous = {sig: signal.signal(sig, lambda number, _frame: received.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if options != SignalHandlerOptions.NO:
            install_signal_handlers(options)
