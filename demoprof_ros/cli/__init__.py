"""`demoprof`: profile images and videos, manage weights, train, evaluate, retrieve.

Each feature module adds its own subcommand with `register_cli(subparsers)`; this package only wires them
and owns `profile` (cli/profile.py). Exit codes: 0 success, 1 some inputs failed or a run failed, 2 bad usage
or setup (missing weights, bad config, an output path that cannot be written), 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from .profile import add_parser as add_profile_parser
from .profile import load_config_file  # noqa: F401  (the CLI's reader of YAML / ROS params files)

log = logging.getLogger("demoprof")

# Modules that contribute subcommands, in help order.
_SUBCOMMAND_MODULES: tuple[str, ...] = ("demo", "core.model_zoo", "training.trainer", "evaluation.evaluate",
                                         "evaluation.experiment", "evaluation.retrieval", "evaluation.card")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demoprof", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_profile_parser(subparsers)
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(f"demoprof_ros.{name}").register_cli(subparsers)
    return parser


def _version() -> str:
    from .. import __version__

    return f"demoprof {__version__}"


def _configure_logging(verbose: int) -> None:
    """Our own messages from INFO (DEBUG with -vv); other libraries' only from WARNING (INFO with -v)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in ("demoprof", "demoprof_ros"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\ndemoprof: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _run_subcommand(name: str, argv: Sequence[str] | None) -> int:
    return main([name, *(sys.argv[1:] if argv is None else argv)])


def train_main(argv: Sequence[str] | None = None) -> int:
    """`demoprof-train` = `demoprof train`."""
    return _run_subcommand("train", argv)


def eval_main(argv: Sequence[str] | None = None) -> int:
    """`demoprof-eval` = `demoprof eval`."""
    return _run_subcommand("eval", argv)

