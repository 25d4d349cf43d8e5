"""Smoke tests of the benchmark scripts: each runs at a tiny setting, prints its table and writes its JSON.

No timing is asserted (speed figures belong in docs/performance.md); what is checked is that the scripts run,
that their result records hold the fields the docs quote, and the one correctness claim they make: the
batched pipeline gives the same outputs as the naive per-face baseline.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"


def run_script(name: str, args: list[str], tmp_path: Path, timeout: float = 240) -> tuple[str, dict]:
    out = tmp_path / f"{name}.json"
    proc = subprocess.run([sys.executable, str(BENCH / name), *args, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout, json.loads(out.read_text())


def test_bench_profiler_smoke(tmp_path):
    stdout, result = run_script("bench_profiler.py", [
        "--arch", "tiny-64", "--faces", "1", "3", "--runs", "2", "--baseline-runs", "1", "--detector-runs", "1",
        "--detectors", "haar", "--batch-sweep", "1", "2", "--threads", "1"], tmp_path)
    assert "| faces | pipeline | p50 ms |" in stdout and "RANDOM" in stdout
    rows = result["scaling"]
    assert [(r["faces"], r["pipeline"]) for r in rows] == [(1, "ours"), (1, "naive baseline"),
                                                           (3, "ours"), (3, "naive baseline")]
    for row in rows:
        assert row["n"] == (2 if row["pipeline"] == "ours" else 1) and row["median_ms"] > 0
        if row["pipeline"] == "ours":
            assert row["check"]["identical"], row["check"]
            assert row["check"]["label_mismatches"] == 0 and row["check"]["max_abs_prob_diff"] <= 1e-4
            assert row["faces_per_s"] == pytest.approx(row["faces"] * 1000 / row["median_ms"])
    assert [r["batch_size"] for r in result["batch_sweep"]] == [1, 2]
    assert result["text"]["longest_tokens"] < result["text"]["context"]
    assert result["text"]["max_abs_diff"] < 1e-4
    assert set(result["first_frame"]) == {"faces", "without_warmup", "with_warmup"}
    assert result["first_frame"]["with_warmup"]["warmup_s"] > 0
    assert result["detector"][0]["detector"] == "haar" and result["detector"][0]["faces_found"] == 1
    assert result["machine"]["nproc"] >= 1 and "--arch tiny-64" in result["command"]


def test_tiled_frame_boxes_crop_back_to_the_tiles():
    sys.path.insert(0, str(BENCH))
    from bench_profiler import face_crops, tiled_frame

    from demoprof_ros.core.detection import crop_face
    crops = face_crops()
    frame, boxes = tiled_frame(crops, 4, 640, 480)
    assert frame.shape == (480, 640, 3) and len(boxes) == 4
    for box in boxes:
        x1, y1, x2, y2 = box.box
        assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480
        crop = crop_face(frame, box, margin=0.25)
        assert abs(crop.shape[0] - (x2 - x1) * 1.5) <= 2  # the whole tile comes back, background excluded


@pytest.mark.parametrize("arch", ["tiny-64"])
def test_compiled_encoder_pads_to_buckets_and_matches(arch):
    from demoprof_ros.core.models import load_model
    from demoprof_ros.core.scorer import ZeroShotScorer, batch_buckets

    assert batch_buckets(16) == (1, 2, 4, 8, 16) and batch_buckets(6) == (1, 2, 4, 6)
    loaded = load_model(arch)
    eager = ZeroShotScorer(loaded, batch_size=4)
    compiled = ZeroShotScorer(loaded, batch_size=4)
    calls = []
    compiled.compile_image_encoder(mode="default")
    compiled._compiled = lambda batch, normalize: calls.append(batch.shape[0]) or loaded.model.encode_image(
        batch, normalize=normalize)  # stand-in for torch.compile: the bucketing is what is tested here
    rng = torch.Generator().manual_seed(0)
    crops = [torch.randint(0, 256, (70, 60 + i, 3), generator=rng, dtype=torch.uint8).numpy() for i in range(7)]
    a, b = eager.encode_images(crops), compiled.encode_images(crops)
    assert calls == [4, 4]  # 7 crops at batch_size 4: 4 + 3 padded to 4
    assert torch.allclose(a, b, atol=1e-5)


def test_bench_node_smoke(tmp_path):
    pytest.importorskip("rclpy")
    stdout, result = run_script("bench_node.py", [
        "--arch", "tiny-64", "--sizes", "640x480", "--frames", "2", "--warmup", "1", "--duration", "1",
        "--detectors", "haar", "--frame-timeout", "30"], tmp_path)
    assert "| frame | transport |" in stdout
    assert [(r["size"], r["transport"]) for r in result["rows"]] == [("640x480", "raw"), ("640x480", "compressed")]
    for row in result["rows"]:
        lat = row["latency"]
        assert lat["lost"] == 0 and lat["e2e"]["n"] == 2
        assert lat["e2e"]["median_ms"] >= lat["node"]["median_ms"] > 0
        assert row["sustained"]["sent"] >= 1
    assert result["detector"] == "haar" and result["node_exit_code"] == 0
    assert result["node_memory_kb"]["VmHWM"] >= result["node_memory_kb"]["VmRSS"] > 0


def test_bench_memory_smoke(tmp_path):
    pytest.importorskip("rclpy")
    stdout, result = run_script("bench_memory.py", [
        "--arch", "tiny-64", "--duration", "3", "--interval", "0.5", "--rate", "10", "--detectors", "haar"],
        tmp_path)
    assert "| node process | RSS MiB |" in stdout
    assert len(result["samples"]) >= 4 and result["frames_sent"] >= 20
    assert result["peak_rss_mib"] > 0 and "rss_slope_mib_per_min" in result["growth"]
    assert result["node_exit_code"] == 0


def test_bench_schedule_offline_only_smoke(tmp_path, shared_data):
    if not (shared_data / "fairface_val_sample" / "labels.csv").is_file():
        pytest.skip("no fairface_val_sample in the shared data")
    stdout, result = run_script("bench_schedule.py", [
        "--faces", "2", "--duration", "1", "--model", "tiny", "--offline-only", "--face-set",
        str(shared_data / "fairface_val_sample"), "--param", "tracking.switch_margin=0.0",
        "--offline-schedules", "refresh_frames=5"], tmp_path)
    assert "faces scored / every frame" in stdout and "frames/s" not in stdout  # no DDS run
    (run,) = result["runs"]
    assert set(run) == {"faces", "offline"} and set(run["offline"]) == {"default", "refresh_frames=5"}
    for o in run["offline"].values():
        assert 0 < o["faces_scored"] <= o["faces_scored_every_frame"]
        assert set(o["agreement"]) == {"age", "gender", "race"}


def test_bench_train_smoke(tmp_path):
    stdout, result = run_script("bench_train.py", [
        "--arch", "tiny-64", "--batch-size", "4", "--steps", "1", "--threads", "1", "--loader-images", "64",
        "--loader-workers", "0", "--loader-epochs", "1"], tmp_path)
    assert "| variant | step p50 ms |" in stdout
    rows = {r["variant"]: r for r in result["steps"]}
    assert set(rows) == {"contrastive", "contrastive-fulltext", "mim-pixels", "mim-codebook", "mim-codebook-cached",
                         "mim-codebook-cached-part"}
    # Same inputs, same seeds: trimming the text context and caching the teacher's targets change no loss.
    assert rows["contrastive"]["last_loss"] == pytest.approx(rows["contrastive-fulltext"]["last_loss"], abs=1e-5)
    assert rows["mim-codebook"]["last_loss"] == pytest.approx(rows["mim-codebook-cached"]["last_loss"], abs=1e-5)
    assert rows["contrastive-fulltext"]["flops_per_image"] > rows["contrastive"]["flops_per_image"] > 0
    assert rows["mim-codebook"]["flops_per_image"] > rows["mim-codebook-cached"]["flops_per_image"] \
        > rows["mim-codebook-cached-part"]["flops_per_image"] > rows["contrastive"]["flops_per_image"]
    loader = result["loader"]
    if "error" not in loader[0]:  # needs the shared data sets
        assert [r["cache"] for r in loader] == [False, True] and all(r["images"] == 64 for r in loader)
