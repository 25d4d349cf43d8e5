"""The package as `colcon build` installs it (plain or --symlink-install): what `ros2 launch` / `ros2 run` use.

Runs under `colcon test` (`make colcon-test`): the installed files, the installed executables and what they
import. From the source tree (`make test`) it skips with the reason.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "demoprof_ros"
EXECUTABLES = ("profiler_node", "image_source", "profile_echo", "demoprof", "demoprof-train", "demoprof-eval")


@pytest.fixture(scope="module")
def prefix() -> Path:
    """The install prefix of demoprof_ros in a colcon workspace (install/demoprof_ros)."""
    ament = pytest.importorskip("ament_index_python.packages", reason="ament_index_python is not importable")
    try:
        found = Path(ament.get_package_prefix(PACKAGE))
    except (ament.PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        pytest.skip("demoprof_ros is not in the ament index (AMENT_PREFIX_PATH)")
    if not (found / "share" / "colcon-core" / "packages" / PACKAGE).is_file():
        pytest.skip(f"demoprof_ros in {found} was not installed by colcon; `make colcon-test` runs these checks")
    return found


def _installed_python(code: str, cwd: Path) -> str:
    """Run `code` as the installed package sees it: not from the sources (colcon test's cwd), from `cwd`."""
    run = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_package_is_imported_from_the_install(prefix: Path, tmp_path: Path) -> None:
    """Plain: install/demoprof_ros/lib/...; --symlink-install: build/demoprof_ros (links into the sources)."""
    workspace = prefix.parents[1]  # <ws>/install/demoprof_ros
    module = Path(_installed_python("import demoprof_ros; print(demoprof_ros.__file__)", tmp_path))
    assert workspace in module.parents, f"demoprof_ros imported from {module}, not from the workspace {workspace}"
    assert not (module.parents[1] / "setup.py").is_file() or (module.parents[1] / "setup.py").is_symlink(), \
        f"{module} is the source tree, not what colcon installed"


@pytest.mark.parametrize("relative", [
    "share/ament_index/resource_index/packages/demoprof_ros",
    "share/demoprof_ros/package.xml",
    "share/demoprof_ros/launch/profiler.launch.py",
    "share/demoprof_ros/config/profiler.yaml",
    "share/demoprof_ros/config/prompts.yaml",
    "share/demoprof_ros/config/fastdds_localhost.xml",
    "share/demoprof_ros/data/obama_family_2011.jpg",
    "share/demoprof_ros/models/README.md",
    "share/demoprof_ros/models/demoprof-mobilenetv2-112/model.safetensors",
    "share/demoprof_ros/models/demoprof-mobilenetv2-112/meta.json",
    "share/demoprof_ros/models/demoprof-mobilenetv2-112/MODEL_CARD.md",
])
def test_installed_share_files(prefix: Path, relative: str) -> None:
    assert (prefix / relative).is_file(), f"{relative} missing under {prefix}"


@pytest.mark.parametrize("name", EXECUTABLES)
def test_ros2_run_finds_the_executables(prefix: Path, name: str) -> None:
    """`ros2 run demoprof_ros <name>` runs <prefix>/lib/demoprof_ros/<name>."""
    path = prefix / "lib" / PACKAGE / name
    assert path.is_file() and os.access(path, os.X_OK), f"{path} is not an executable"


def test_share_directory_is_the_installed_one(prefix: Path) -> None:
    from ament_index_python.packages import get_package_share_directory

    assert Path(get_package_share_directory(PACKAGE)) == prefix / "share" / PACKAGE


def test_weights_live_in_one_place_for_workspaces(prefix: Path, tmp_path: Path) -> None:
    """Plain and --symlink-install both look in ~/.cache/demoprof/models (unless DEMOPROF_MODELS / models_dir)."""
    expected = Path.home() / ".cache" / "demoprof" / "models"
    env = {k: v for k, v in os.environ.items() if k != "DEMOPROF_MODELS"}
    run = subprocess.run([str(prefix / "lib" / PACKAGE / "demoprof"), "models", "list"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"models dir: {expected}" in run.stdout, run.stdout


def test_ros2_run_profiler_node_reports_bad_parameters(prefix: Path) -> None:
    """The installed node starts, reads parameters and exits 2 on a bad one (no model is loaded)."""
    run = subprocess.run([str(prefix / "lib" / PACKAGE / "profiler_node"), "--ros-args",
                          "-p", "tracking.fusion:=median", "-r", "__node:=install_check"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "tracking.fusion" in run.stdout + run.stderr


def test_auto_finds_the_shipped_model_in_the_install(prefix: Path, tmp_path: Path) -> None:
    """A plain colcon build has no checkout beside the code: auto must find the shipped copy in share/."""
    code = ("from demoprof_ros.core.shipped_model import find_shipped; "
            "print(find_shipped(None))")
    found = _installed_python(code, tmp_path)
    assert found.endswith("demoprof-mobilenetv2-112"), found
