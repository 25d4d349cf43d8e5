"""The architecture holds: the import contract (.importlinter) passes and fails on a deliberate violation;
no module or function is over the size limits without a stated reason; importing the package is cheap."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"

needs_lint = pytest.mark.skipif(not LINT.is_file(), reason="import-linter is not installed in this environment")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(root), "PATH": ""})


@needs_lint
def test_contract_holds_on_the_package():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@needs_lint
@pytest.mark.parametrize("module, line, contract", [
    ("core/taxonomy.py", "import rclpy", "rclpy and ROS messages"),
    ("core/scorer.py", "from ..training import losses", "The core never imports"),
    ("evaluation/card.py", "from ..ros import hri", "Nothing outside demoprof_ros.ros imports it"),
    ("training/losses.py", "from ..evaluation import card", "Training does not import evaluation"),
])
def test_a_violation_breaks_the_contract(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "demoprof_ros", tmp_path / "demoprof_ros",
                    ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    target = tmp_path / "demoprof_ros" / module
    target.write_text(target.read_text() + f"\n{line}  # deliberate violation\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    broken = [ln for ln in result.stdout.splitlines() if " BROKEN" in ln]
    assert any(ln.startswith(contract) for ln in broken), result.stdout


# --- size limits ----------------------------------------------------------------------------------------------

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
#: A module or function may be longer when its docstring says why, with this marker.
REASON_MARKER = "Long because:"
#: Current offenders in parts other sessions are rewriting (being split in issue 13/10/12); the lead removes
#: each entry when that work merges. Keys: path under demoprof_ros/, or "path:function".
ALLOWED: set[str] = set()  # core/models.py was split in issue 13 (core/checkpoints.py, core/model_meta.py)


def _oversized(path: Path) -> list[str]:
    """'path: N lines' for the module and 'path:function: N lines' for each function over the limits."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    name = path.relative_to(ROOT / "demoprof_ros").as_posix()
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES and REASON_MARKER not in (ast.get_docstring(tree) or ""):
        found.append(f"{name}: {lines} lines")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and REASON_MARKER not in (ast.get_docstring(node) or ""):
                found.append(f"{name}:{node.name}: {length} lines")
    return found


def _key(entry: str) -> str:
    return entry.rsplit(": ", 1)[0]


def test_no_module_or_function_over_the_size_limits():
    found = [e for p in sorted((ROOT / "demoprof_ros").rglob("*.py")) for e in _oversized(p)]
    over = [e for e in found if _key(e) not in ALLOWED]
    assert not over, (f"over {MAX_MODULE_LINES} lines per module / {MAX_FUNCTION_LINES} per function without "
                      f"'{REASON_MARKER}' in the docstring: {over}")
    stale = sorted(ALLOWED - {_key(e) for e in found})
    assert not stale, f"no longer over the limits: remove {stale} from ALLOWED"


@pytest.mark.parametrize("body, docstring, expected", [
    ("    x = 1\n" * 85, "", ["m.py:f: 87 lines"]),
    ("    x = 1\n" * 85, "Long because: one table.", []),
    ("    x = 1\n" * 10, "", []),
])
def test_the_size_check_can_fail(tmp_path, monkeypatch, body, docstring, expected):
    package = tmp_path / "demoprof_ros"
    package.mkdir()
    (package / "m.py").write_text(f'def f():\n    """{docstring}"""\n{body}')
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _oversized(package / "m.py") == expected


def test_a_long_module_needs_a_reason(tmp_path, monkeypatch):
    package = tmp_path / "demoprof_ros"
    package.mkdir()
    (package / "big.py").write_text("x = 1\n" * 501)
    (package / "why.py").write_text('"""Long because: generated table."""\n' + "x = 1\n" * 501)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _oversized(package / "big.py") == ["big.py: 501 lines"] and _oversized(package / "why.py") == []


# --- import cost ----------------------------------------------------------------------------------------------

def test_importing_the_package_does_not_import_torch():
    code = ("import sys, demoprof_ros; "
            "assert callable(demoprof_ros.profile); "
            "print(sorted(m for m in ('torch', 'open_clip', 'cv2', 'rclpy') if m in sys.modules)); "
            "demoprof_ros.ProfilerConfig; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.splitlines()
    assert before == "[]"  # nothing heavy on import ...
    assert after == "True"  # ... until a lazy attribute needs it (so the check above can fail)
