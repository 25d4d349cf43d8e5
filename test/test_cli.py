"""`demoprof profile` as a shell user runs it: output, exit codes, messages, bad files in a folder."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import jsonschema
import pytest

from conftest import ROOT

PHOTO = "group_photos/obama_family_2011.jpg"
SCHEMA = json.loads((ROOT / "docs" / "profile_schema.json").read_text())
# The CLI's records are $defs/cli_record of the same file that defines /user_profile.
CLI_RECORD = jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], "$ref": "#/$defs/cli_record"})


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
    for record in records:
        CLI_RECORD.validate(record)
    ids = [face["id"] for r in records for face in r.get("faces", [])]
    assert len(ids) == len(set(ids)) and min(ids) == 1  # still images: a fresh id per face, never reused
    assert {r["schema"] for r in records} == {"demoprof_ros/cli_profile", "demoprof_ros/cli_error"}


def test_cli_record_schema_bites():
    good = {"schema": "demoprof_ros/cli_error", "version": 1, "source": "x.jpg", "frame": None, "error": "bad"}
    CLI_RECORD.validate(good)
    for bad in ({**good, "version": 2}, {**good, "extra": 1}, {k: v for k, v in good.items() if k != "error"},
                {**good, "schema": "demoprof_ros/cli_profile"}, {**good, "frame": -1}):
        with pytest.raises(jsonschema.ValidationError):
            CLI_RECORD.validate(bad)
    face = {"id": None, "box": {"x": 0, "y": 0, "width": 1, "height": 1}, "detection_score": 0.5,
            "attributes": {}, "joint": [], "frames_fused": 1, "frames_since_scored": 0, "seconds_since_scored": 0.0}
    frame = {"schema": "demoprof_ros/cli_profile", "version": 1, "source": "x.jpg", "frame": None,
             "image": {"width": 2, "height": 2}, "model": "m", "detector": "haar", "latency_ms": 1.0, "faces": [face]}
    with pytest.raises(jsonschema.ValidationError):  # what the CLI printed before: "id": null
        CLI_RECORD.validate(frame)
    CLI_RECORD.validate({**frame, "faces": [{**face, "id": 1}]})


def _write_video(path, image, frames=5, shift=2):
    height, width = image.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (width, height))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(cv2.warpAffine(image, np.float32([[1, 0, i * shift], [0, 1, 0]]), (width, height)))
    writer.release()
    return path


def test_video_is_tracked_fused_and_annotated_as_a_video(test_data, tmp_path):
    video = _write_video(tmp_path / "clip.avi", cv2.imread(str(test_data / PHOTO)))
    result = demoprof("profile", str(video), "--model", "tiny", "--detectors", "haar", "--json", "--no-progress",
                      "--min-face-size", "16", "--annotate", str(tmp_path / "annotated.mp4"), "--no-schedule",
                      "--text-cache-dir", str(tmp_path / "text"))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    for record in records:
        CLI_RECORD.validate(record)
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4] and {r["source"] for r in records} == {str(video)}
    assert records[0]["faces"] == []  # the node's min_hits = 2: a face is reported from its second frame on
    seen = {}
    for r in records[1:]:
        for face in r["faces"]:
            seen.setdefault(face["id"], []).append((r["frame"], face["frames_fused"]))
    steady = [track for track in seen.values() if [f for f, _ in track] == [1, 2, 3, 4]]
    assert len(steady) >= 3, seen  # the same ids through the clip ...
    assert all([n for _, n in track] == [2, 3, 4, 5] for track in steady)  # ... fusing every frame
    capture = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 5
    assert list((tmp_path / "text").glob("*.safetensors"))  # caption embeddings only ...
    assert not list((tmp_path / "text").glob("*.jpg")) and "0 from the cache" in result.stderr


def _main(argv, capsys):
    from demoprof_ros.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


def test_folder_reports_skipped_files_and_profiles_videos(test_data, tmp_path, capsys, caplog):
    shutil.copy(test_data / PHOTO, tmp_path / "a.jpg")
    (tmp_path / "anim.gif").write_bytes(b"GIF89a")
    (tmp_path / "notes.txt").write_text("x")
    _write_video(tmp_path / "clip.avi", cv2.imread(str(test_data / PHOTO)), frames=2)
    code, out = _main(["profile", str(tmp_path), "--model", "tiny", "--detectors", "haar", "--json",
                       "--no-progress", "--no-text-cache", "--min-face-size", "16",
                       "--annotate", str(tmp_path / "out")], capsys)
    assert code == 0, out.err
    records = [json.loads(line) for line in out.out.splitlines()]
    for record in records:
        CLI_RECORD.validate(record)
    skipped = {os.path.basename(r["source"]): r["reason"] for r in records if r["schema"].endswith("skipped")}
    assert set(skipped) == {"anim.gif", "notes.txt"} and ".gif" in skipped["anim.gif"]
    assert "anim.gif" in caplog.text  # said on stderr too
    frames = [(os.path.basename(r["source"]), r["frame"]) for r in records if r["schema"].endswith("profile")]
    assert frames == [("a.jpg", None), ("clip.avi", 0), ("clip.avi", 1)]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg", "clip.mp4"]


@pytest.mark.parametrize("files, needle", [([], "it is empty"), (["x.gif", "y.txt"], "skipped 2 unsupported")])
def test_folder_without_images_is_a_usage_error(tmp_path, capsys, files, needle):
    for name in files:
        (tmp_path / name).write_text("x")
    code, out = _main(["profile", str(tmp_path), "--model", "tiny", "--json"], capsys)
    assert code == 2 and needle in out.err and out.out == ""


def test_text_cache_makes_the_second_start_reuse_the_embeddings(test_data, tmp_path, capsys, caplog):
    argv = ["profile", str(test_data / PHOTO), "--model", "tiny", "--detectors", "haar", "--json",
            "--text-cache-dir", str(tmp_path / "text")]
    first = _main(argv, capsys)
    second = _main(argv, capsys)
    assert first[0] == second[0] == 0
    assert "caption embeddings: 0 from the cache, 4 computed" in caplog.text
    assert "caption embeddings: 4 from the cache, 0 computed" in caplog.text
    assert json.loads(first[1].out)["faces"] == json.loads(second[1].out)["faces"]  # identical results
    assert len(list((tmp_path / "text").glob("*.safetensors"))) == 4


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


@pytest.mark.parametrize("text, profiler, tracking", [
    ("model: tiny\ntracking:\n  min_hits: 1\n", {"model": "tiny"}, {"min_hits": 1}),
    ("/**/profiler_node:\n  ros__parameters:\n    model: tiny\n    autostart: true\n    tracking:\n      window: 4\n",
     {"model": "tiny"}, {"window": 4}),
])
def test_config_file_carries_tracking_settings(tmp_path, text, profiler, tracking):
    from demoprof_ros.cli.profile import load_config_file

    (tmp_path / "c.yaml").write_text(text)
    assert load_config_file(tmp_path / "c.yaml")[:2] == (profiler, tracking)


def test_shipped_params_file_gives_the_node_tracking_defaults():
    from demoprof_ros.cli.profile import load_config_file
    from demoprof_ros.core.tracking import TrackerConfig

    from demoprof_ros.core.schedule import ScheduleConfig

    _, tracking, schedule = load_config_file(ROOT / "config" / "profiler.yaml")
    assert TrackerConfig.from_dict(tracking) == TrackerConfig()
    assert ScheduleConfig.from_dict(schedule) == ScheduleConfig()


@pytest.mark.parametrize("options, every_frame", [([], False), (["--no-schedule"], True)])
def test_video_scores_tracked_faces_on_a_schedule(test_data, tmp_path, options, every_frame):
    video = _write_video(tmp_path / "clip.avi", cv2.imread(str(test_data / PHOTO)), frames=10, shift=1)
    (tmp_path / "c.yaml").write_text("tracking:\n  min_hits: 1\nschedule:\n  refresh_frames: 6\n")
    result = demoprof("profile", str(video), "--model", "tiny", "--detectors", "haar", "--json", "--no-progress",
                      "--min-face-size", "16", "--config", str(tmp_path / "c.yaml"),
                      "--text-cache-dir", str(tmp_path / "text"), *options)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    for record in records:
        CLI_RECORD.validate(record)
    faces = [face for r in records for face in r["faces"]]
    assert len(records) == 10 and min(len(r["faces"]) for r in records) >= 2  # every tracked face, every frame
    ages = [face["frames_since_scored"] for face in faces]
    first = {}
    for face in faces:
        first.setdefault(face["id"], face)
    assert all(face["frames_since_scored"] == 0 for face in first.values())  # a new face is scored at once
    if every_frame:
        assert set(ages) == {0}
    else:
        assert 0 < max(ages) <= 6 + len(first) and ages.count(0) < len(ages) / 2
        # seconds in video time: 10 frames per second in _write_video
        assert all(abs(face["seconds_since_scored"] - face["frames_since_scored"] / 10.0) < 1e-6 for face in faces)


def test_bad_schedule_setting_is_a_clear_error(test_data, tmp_path):
    result = demoprof("profile", str(test_data / PHOTO), "--model", "tiny", "--refresh-frames", "0")
    assert result.returncode == 2 and "schedule.refresh_frames: expected an integer >= 1, got 0" in result.stderr
