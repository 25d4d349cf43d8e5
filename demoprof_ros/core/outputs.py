"""Output paths checked before the long work starts (CLI options such as --annotate, --output, --sheet).

An evaluation that runs for an hour and then fails to write its report is the worst way to learn that the
output path was a typo. Each check here is cheap, has no side effect (nothing is created) and raises
`OutputPathError` with one message naming the path and what is wrong; `output_dir_arg` / `output_file_arg`
wrap them as argparse `type=` callables so a bad path is a usage error (exit 2) at argument-parsing time.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Iterable


class OutputPathError(ValueError):
    """An output path that cannot be written; the message names it and says why."""


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")  # pragma: no cover - a relative path always ends at "."


def _check_creatable(path: Path, what: str) -> None:
    """`path` does not exist: its nearest existing ancestor must be a writable folder."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise OutputPathError(f"{what} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {path}: cannot create it, {base} is not writable")


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """A folder we may write into: an existing writable folder, or one that can be created."""
    if not str(path).strip():
        raise OutputPathError(f"{what}: empty path")
    path = Path(path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise OutputPathError(f"{what} {path}: exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputPathError(f"{what} {path}: folder is not writable")
        return path
    _check_creatable(path, what)
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file",
                      suffixes: Iterable[str] | None = None) -> Path:
    """A file we may write: not a folder, with an allowed suffix, and a writable (or creatable) parent."""
    if not str(path).strip():
        raise OutputPathError(f"{what}: empty path")
    path = Path(path).expanduser()
    allowed = tuple(s.lower() for s in suffixes or ())
    if path.is_dir():
        raise OutputPathError(f"{what} {path}: is a folder; expected a file name")
    if allowed and path.suffix.lower() not in allowed:
        raise OutputPathError(f"{what} {path}: expected a file name ending in {' or '.join(allowed)}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise OutputPathError(f"{what} {path}: file is not writable")
        return path
    _check_creatable(path, what)
    return path


def _as_arg(check: Callable[..., Path], **kwargs) -> Callable[[str], Path]:
    def parse(value: str) -> Path:
        try:
            return check(value, **kwargs)
        except OutputPathError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = check.__name__.replace("check_", "")  # argparse names it in "invalid ... value"
    return parse


def output_dir_arg(what: str = "output folder") -> Callable[[str], Path]:
    """argparse `type=` for an output folder (a bad one is a usage error before any work starts)."""
    return _as_arg(check_output_dir, what=what)


def output_file_arg(what: str = "output file", suffixes: Iterable[str] | None = None) -> Callable[[str], Path]:
    """argparse `type=` for an output file, optionally restricted to some suffixes."""
    return _as_arg(check_output_file, what=what, suffixes=tuple(suffixes or ()))
