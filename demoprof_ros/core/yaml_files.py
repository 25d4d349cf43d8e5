"""Reading a user's YAML file: one place that turns a missing file or bad YAML into the caller's own error."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_yaml(path: str | Path, error: type[Exception], what: str, *, mapping: bool = True) -> Any:
    """The parsed file; `error(message)` naming `what` and the path when it is missing, not YAML or (with
    `mapping`) not a mapping at the top level. An empty file is None."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} is not valid YAML: {exc}") from None
    if mapping and data is not None and not isinstance(data, dict):
        raise error(f"{what} {path}: expected a mapping at the top level")
    return data
