"""`demoprof profile` as a shell user runs it: output, exit codes, messages, bad files in a folder."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

PHOTO = "group_photos/obama_family_2011.jpg"


def demoprof(*args, timeout=120):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "demoprof_ros.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, test_data):
    """Two good images, one non-image file and one truncated JPEG."""
    path = tmp_path_factory.mktemp("inputs")
    shutil.copy(test_data / PHOTO, path / "a.jpg")
    shutil.copy(test_data / "group_photos" / "solvay_conference_1927.jpg", path / "b.jpg")
    (path / "c.jpg").write_text("not an image")
    data = (test_data / PHOTO).read_bytes()
    (path / "d.jpg").write_bytes(data[: len(data) // 3])
    return path


def test_profile_json_on_a_folder_keeps_going(folder, tmp_path):
    result = demoprof("profile", str(folder), "--model", "tiny", "--detectors", "haar", "--json",
                      "--min-face-size", "16", "--max-faces", "40", "--annotate", str(tmp_path / "out"))
    assert result.returncode == 1, result.stderr  # some inputs failed
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 4
    by_name = {os.path.basename(r["source"]): r for r in records}
    assert len(by_name["a.jpg"]["faces"]) >= 3 and len(by_name["b.jpg"]["faces"]) >= 10
    assert "error" in by_name["c.jpg"] and "error" in by_name["d.jpg"]
    assert by_name["a.jpg"]["model"].startswith("tiny")
    schema = json.loads((ROOT / "docs" / "profile_schema.json").read_text())
    face_keys = set(schema["$defs"]["face"]["required"])
    assert all(face_keys <= set(face) for face in by_name["a.jpg"]["faces"])
    assert by_name["b.jpg"]["image"] == {"width": 660, "height": 478}
    assert "untrained" in result.stderr.lower() or "mean nothing" in result.stderr.lower()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "b.jpg"]


def test_profile_table_and_switched_off_race(test_data):
    result = demoprof("profile", str(test_data / PHOTO), "--model", "tiny", "--detectors", "haar",
                      "--attributes", "age,gender", "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["source", "face", "box"]
    assert len(lines) >= 4 and all(" off " in line for line in lines[1:])


@pytest.mark.parametrize("args,code,needle", [
    (["--model", "/nonexistent/clip.pt"], 2, "/nonexistent/clip.pt"),
    (["--model", "tiny", "--dtype", "fp64"], 2, "invalid choice"),
    (["--model", "tiny", "--min-confidence", "3"], 2, "min_confidence"),
])
def test_profile_setup_errors(test_data, args, code, needle):
    result = demoprof("profile", str(test_data / PHOTO), *args)
    assert result.returncode == code
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_input_is_reported(tmp_path):
    result = demoprof("profile", str(tmp_path / "nope.jpg"), "--model", "tiny", "--detectors", "haar", "--json")
    assert result.returncode == 1
    assert "nope.jpg" in result.stdout + result.stderr


def test_help_lists_subcommands():
    result = demoprof("--help")
    assert result.returncode == 0 and "profile" in result.stdout and "models" in result.stdout
