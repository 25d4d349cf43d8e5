"""`make demo` as a newcomer runs it: node, camera stand-in and printer over real DDS, then a clean exit."""
import os
import subprocess
import sys

from demoprof_ros.demo import demo_environment


def test_demo_prints_profiles_and_exits_cleanly():
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([sys.executable, "-m", "demoprof_ros.cli", "demo", "--model", "tiny", "--count", "2",
                             "--timeout", "90"], capture_output=True, text=True, timeout=150, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    frames = [line for line in result.stdout.splitlines() if "face(s)" in line]
    assert len(frames) >= 2
    assert any(" face 1 at " in line or "  face " in line for line in result.stdout.splitlines())
    assert "UNTRAINED" in result.stderr  # the tiny model is announced loudly


def test_demo_environment_keeps_user_choices():
    env = demo_environment({"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"})
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == "/mine.xml"
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.path.isfile(demo_environment({})["FASTDDS_DEFAULT_PROFILES_FILE"])


def test_demo_rejects_bad_model_setting():
    result = subprocess.run([sys.executable, "-m", "demoprof_ros.cli", "demo", "--device", "tpu"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "device" in result.stderr
