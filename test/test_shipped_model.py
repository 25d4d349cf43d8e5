"""The shipped model: ImageNet weight mapping, `auto`/`shipped` picking, the coarse-caption fix, the recipe."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import helpers_checkpoints as ck
from demoprof_ros.core import models, shipped_model
from demoprof_ros.core.images import load_image
from demoprof_ros.core.models import ModelLoadError, load_model, save_checkpoint
from demoprof_ros.core.prompts import load_prompts
from demoprof_ros.core.shipped_model import SHIPPED_NAME, torchvision_to_timm
from demoprof_ros.training.datasets import Sample, captions_for, description_of, read_dataset

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_DIR = ROOT / "models" / SHIPPED_NAME


def _trunk():
    import timm
    return timm.create_model("mobilenetv2_100", pretrained=False, num_classes=0).eval()


def test_torchvision_weights_map_onto_the_timm_trunk():
    import torchvision
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        tv = torchvision.models.mobilenet_v2().eval()
    for m in tv.modules():  # non-trivial BN statistics, so a mis-paired BN would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    trunk = _trunk()
    missing, unexpected = trunk.load_state_dict(torchvision_to_timm(tv.state_dict(), trunk.state_dict()), strict=False)
    assert not unexpected and all("num_batches_tracked" in k for k in missing)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(tv.features(x), trunk.forward_features(x), atol=1e-5)


def test_mapping_refuses_another_network():
    import torchvision
    other = torchvision.models.mobilenet_v3_small().state_dict()
    with pytest.raises(ValueError, match="not the same net|does not fit"):
        torchvision_to_timm(other, _trunk().state_dict())


def _fake_shipped(root: Path) -> Path:
    model = ck.tiny_model("tiny-64")
    return save_checkpoint(root / SHIPPED_NAME, model, ck.tiny_cfg("tiny-64"), {"name": SHIPPED_NAME})


@pytest.mark.parametrize("finetuned", [False, True])
def test_auto_falls_back_to_the_shipped_model(tmp_path, monkeypatch, finetuned):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    monkeypatch.setenv("DEMOPROF_MODELS", str(downloads))
    monkeypatch.setattr(shipped_model, "PACKAGE_MODELS", tmp_path / "package")
    monkeypatch.setattr(shipped_model, "_share_models", lambda: None)
    _fake_shipped(tmp_path / "package")
    if finetuned:  # a user's own fine-tuned run wins over the shipped model
        save_checkpoint(downloads / "mine", ck.tiny_model("tiny-64"), ck.tiny_cfg("tiny-64"), {"name": "mine"})
    assert load_model("auto").name == ("mine" if finetuned else SHIPPED_NAME)
    assert load_model("shipped").name == SHIPPED_NAME
    # an explicit models_dir is searched alone: nothing there -> the untrained tiny model
    assert load_model("auto", models_dir=tmp_path / "empty").name == "tiny-64"


def test_shipped_spec_without_the_model_says_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped_model, "PACKAGE_MODELS", tmp_path)
    monkeypatch.setattr(shipped_model, "_share_models", lambda: None)
    with pytest.raises(ModelLoadError, match="make shipped-model"):
        load_model("shipped", models_dir=tmp_path)


@pytest.mark.parametrize("coarse, expected", [("omit", {None}), ("sample", {"East Asian", "Southeast Asian"})])
def test_coarse_race_captions(coarse, expected):
    sample = Sample(Path("x.jpg"), {"age": "20-29", "gender": "Female", "race": "Asian"})
    rng = random.Random(0)
    races = {description_of(sample, coarse=coarse, rng=rng).race for _ in range(40)}
    assert races == expected
    caption = captions_for(sample, load_prompts(None), random.Random(1), coarse=coarse)
    assert ("asian" in caption.lower()) == (coarse == "sample")


def test_recipe_short_run_trains_and_installs(shared_data, tmp_path, monkeypatch):
    """The rebuild command on a tiny subset (2 steps): splits, ImageNet start, training, test eval, install."""
    from demoprof_ros.evaluation import shipped_recipe
    monkeypatch.setenv("DEMOPROF_DATA", str(shared_data))
    settings = yaml.safe_load((ROOT / "config" / "train_shipped.yaml").read_text())
    settings["datasets"]["fairface_val_sample"]["framing"] = 0.49
    config = tmp_path / "train_shipped.yaml"
    config.write_text(yaml.safe_dump({**settings, "data_root": str(shared_data)}))
    info = shipped_recipe.build(config, tmp_path / "run", limit=16,
                                overrides={"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 8},
                                install=tmp_path / "models")
    counts = info["splits"]["counts"]
    assert counts["utkface_test"] == {"train": 0, "val": 0, "test": 16}
    assert counts["fairface_val_sample"]["test"] == 8 and counts["utkface_extra"]["test"] == 0
    train_files = [line for p in (tmp_path / "run" / "splits").glob("train_*.csv") for line in p.read_text().splitlines()[1:]]
    meta_train = json.loads((Path(info["model_dir"]) / "meta.json").read_text())["data"]["train"]
    repeats = dict(zip((Path(p).stem for p in meta_train["sources"]), meta_train["repeat"]))
    assert repeats["train_fairface_val_sample"] == 8 and repeats["train_utkface_extra"] == 1  # the config's oversampling
    assert meta_train["n"] == sum(counts[name]["train"] * repeats.get(f"train_{name}", 1) for name in counts)
    test_files = [line for p in (tmp_path / "run" / "splits").glob("test_*.csv") for line in p.read_text().splitlines()[1:]]
    assert not {r.split(",")[0] for r in train_files} & {r.split(",")[0] for r in test_files}
    installed = Path(info["installed"])
    weights = installed / "model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == info["sha256"]
    meta = json.loads((installed / "meta.json").read_text())
    assert meta["data"]["train"]["coarse_labels"] == "sample"
    assert meta["attribute_scoring"] == "descriptions"  # the recipe's: selection and test used it too
    loaded = load_model(str(installed))
    assert loaded.name == SHIPPED_NAME and loaded.image_size == 112
    assert tuple(loaded.mean) == shipped_model.IMAGENET_MEAN
    results = json.loads(Path(info["test_results"]).read_text())
    assert set(results["datasets"]) == {"test_fairface_val_sample", "test_fairface_agegender_540", "test_utkface_test",
                                        "test_fairface_val_sample_framed"}
    framed = [r.split(",")[0] for r in train_files if "/framed/fairface_val_sample_0.49/" in r]
    assert framed and all(f.endswith(".png") for f in framed)  # framing: 0.49 of 224 px
    assert load_image(framed[0]).shape == (110, 110, 3)
    assert results["attribute_scoring"] == "descriptions"
    assert meta["crop_margin"] == settings["crop_margin"]  # what `margin: auto` crops with
    detected = json.loads(Path(info["test_results_detected"]).read_text())  # the product's view of each test set
    assert set(detected["datasets"]) == {"test_fairface_val_sample", "test_fairface_agegender_540", "test_utkface_test"}
    for name, ds in detected["datasets"].items():
        d = ds["detection"]
        assert d["margin"] == settings["crop_margin"] and d["images"] == counts[name.removeprefix("test_")]["test"]
        assert d["found"] == ds["images"]["scored"] and d["found"] + d["no_face"] == d["images"]
    card = (installed / "MODEL_CARD.md").read_text()
    assert "test_utkface_test (detected face), gender by race/gender" in card
    assert f"crop margin {settings['crop_margin']:g}; found in" in card
    _check_bench_margin(config, tmp_path / "run" / "splits", installed, counts, tmp_path)


def _check_bench_margin(config: Path, splits: Path, model: Path, counts: dict, tmp_path: Path) -> None:
    """bench_margin.py maps the framed val rows back to their whole images and scores each margin."""
    import importlib.util
    import subprocess
    import sys
    spec = importlib.util.spec_from_file_location("bench_margin", ROOT / "benchmarks" / "bench_margin.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.whole_val_rows(config, splits)
    assert {k: len(v) for k, v in rows.items()} == {k: c["val"] for k, c in counts.items() if c["val"]}
    framed = {s.path.stem for s in read_dataset(splits / "val.csv")[0] if "framed" in s.path.parts}
    assert framed and all("framed" not in s.path.parts for v in rows.values() for s in v)
    assert framed <= {s.path.stem for v in rows.values() for s in v}
    out = tmp_path / "margin.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_margin.py"), "--config", str(config),
                           "--splits", str(splits), "--model", str(model), "--detectors", "haar",
                           "--margins", "0.1,0.25", "--threads", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["sets"]) == set(rows)
    for entry in result["sets"].values():
        assert set(entry["haar"]["accuracy"]) == {"0.1", "0.25"} and 0 <= entry["haar"]["found"] <= entry["n"]
    assert "| mean of the rows above | haar | all |" in proc.stdout


@pytest.mark.parametrize("shape,fraction,side", [((224, 224, 3), 0.49, 110), ((100, 60, 3), 0.5, 30),
                                                  ((50, 50, 3), 1.0, 50)])
def test_center_crop_takes_the_central_square(shape, fraction, side):
    from demoprof_ros.evaluation.shipped_recipe import center_crop
    image = np.arange(np.prod(shape), dtype=np.int64).reshape(shape)
    crop = center_crop(image, fraction)
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    assert crop.shape[:2] == (side, side) and crop[0, 0, 0] == image[top, left, 0]


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_reframe_refuses_a_fraction_outside_0_1(tmp_path, fraction):
    from demoprof_ros.evaluation.shipped_recipe import reframe
    with pytest.raises(ValueError, match="framing"):
        reframe([], fraction, tmp_path)


def test_reframe_refuses_two_images_of_one_name(tmp_path):
    import cv2
    from demoprof_ros.evaluation.shipped_recipe import reframe
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "x.jpg"), np.full((20, 20, 3), 128, np.uint8))
    samples = [Sample(tmp_path / f / "x.jpg", {}) for f in ("a", "b")]
    with pytest.raises(ValueError, match="named 'x'"):
        reframe(samples, 0.5, tmp_path / "out")


@pytest.mark.skipif(not (SHIPPED_DIR / "model.safetensors").is_file(), reason="shipped model not built here")
def test_the_shipped_files_match_their_card():
    weights = SHIPPED_DIR / "model.safetensors"
    assert weights.stat().st_size <= 30 * 2**20
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert digest == json.loads((SHIPPED_DIR / "meta.json").read_text())["sha256"]
    assert digest in (SHIPPED_DIR / "MODEL_CARD.md").read_text()
    loaded = models.load_model("shipped")
    assert loaded.name == SHIPPED_NAME and not loaded.meta.get("untrained")
    assert loaded.meta["attribute_scoring"] == "descriptions"
    recipe = yaml.safe_load((ROOT / "config" / "train_shipped.yaml").read_text())
    assert loaded.meta.get("crop_margin") == recipe["crop_margin"]


def test_bench_shipped_smoke(shared_data, tmp_path):
    """bench_shipped.py on 4 rows per test CSV with the tiny model; the peer is absent here, and it says so."""
    import subprocess
    import sys
    splits = tmp_path / "splits"
    splits.mkdir()
    for name, folder in [("test_fairface_val_sample", "fairface_val_sample"),
                         ("test_fairface_agegender_540", "fairface_agegender_540"),
                         ("test_utkface_test", "utkface_crop_part1")]:
        lines = (shared_data / folder / "labels.csv").read_text().splitlines()
        header, rows = lines[0].split(",")[:4], [r.split(",")[:4] for r in lines[1:5]]
        text = ",".join(header) + "\n" + "\n".join(",".join([str(shared_data / folder / r[0]), *r[1:]]) for r in rows)
        (splits / f"{name}.csv").write_text(text + "\n")
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_shipped.py"), "--model", "tiny",
                           "--splits", str(splits), "--peer-python", str(tmp_path / "no-python"),
                           "--peer-results", str(tmp_path / "peer"), "--speed-images", "4", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["sets"]) == {"FairFace", "UTKFace"}
    fairface = result["sets"]["FairFace"]
    assert fairface["eval"]["images"]["scored"] == 8
    assert fairface["vs_peer"].startswith("peer not run")
    assert set(fairface["bf16_agreement"]) == {"age", "gender", "race"}
    assert all(v > 0 for v in result["speed_images_per_s"].values())
    align = fairface["align"]  # the align study: MTCNN finds the faces of FairFace's padded crops
    assert align["detector"] == "mtcnn" and align["images"] == 8 and align["faces_with_landmarks"] >= 6
    for way in ("whole_image", "detected_plain", "detected_aligned"):
        assert align[way]["gender"][1] == align["faces_with_landmarks"]
    assert "detected, aligned crop" in proc.stdout and "ours, detected crop, all rows" in proc.stdout


def test_bench_shipped_feeds_the_scorer_bgr_as_demoprof_eval_does(shared_data):
    """The bench once flipped load_image's BGR to RGB and scored that as BGR (its numbers were below eval's)."""
    import importlib.util
    import cv2
    spec = importlib.util.spec_from_file_location("bench_shipped", ROOT / "benchmarks" / "bench_shipped.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    samples = read_dataset(shared_data / "fairface_val_sample")[0][:3]
    for sample, crop in zip(samples, bench.crops_bgr(samples)):
        assert np.array_equal(crop, cv2.imread(str(sample.path), cv2.IMREAD_COLOR))


def test_bench_shipped_compares_on_the_same_rows_and_counts_misses_wrong(tmp_path):
    """compare(): the peer's misses count both ways; ours on detected crops counts our detector's misses wrong."""
    import importlib.util
    from types import SimpleNamespace
    spec = importlib.util.spec_from_file_location("bench_shipped", ROOT / "benchmarks" / "bench_shipped.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    samples = [SimpleNamespace(path=tmp_path / f"{i}.jpg", labels={"gender": g, "age": "20-29"})
               for i, g in enumerate(["Male", "Female", "Male", "Female"])]
    ours = {"gender": ["Male", "Male", "Male", "Female"], "age": ["20-29"] * 4}
    peer = {str(s.path.resolve()): ({"found": True, "gender": "male", "age": 25} if i < 2 else {"found": False})
            | {"crop_gender": "female", "crop_age": 25} for i, s in enumerate(samples)}
    detected = {"gender": ["Male", "Female", None, "Female"], "age": ["20-29", None, "30-39", "20-29"]}
    out = bench.compare(samples, ours, peer, detected)
    assert out["peer_found"] == 2
    assert out["gender"]["ours_all"] == (0.75, 4) and out["gender"]["ours_on_peer_found"] == (0.5, 2)
    assert out["gender"]["peer_found_only"] == (0.5, 2) and out["gender"]["peer_misses_wrong"] == (0.25, 4)
    assert out["gender"]["ours_detected_on_peer_found"] == (1.0, 2)
    assert out["gender"]["ours_detected_all"] == (0.75, 4)  # the None (our miss) counts wrong
    assert out["age"]["ours_detected_all"] == (0.5, 4) and out["gender"]["peer_crop"] == (0.5, 4)
