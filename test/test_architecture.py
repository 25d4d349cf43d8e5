"""The import contract (.importlinter) holds, and it is able to fail: a deliberate violation breaks it."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT.is_file(), reason="import-linter is not installed in this environment")


def _lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=root,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(root), "PATH": ""})


def test_contract_holds_on_the_package():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


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
