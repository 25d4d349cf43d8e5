"""`demoprof eval`: end to end with the tiny model on shared data, and honest scoring on constructed cases.

Metric arithmetic itself (confusion matrices, macro averages, ECE) is tested in test_metrics.py; here the
question is whether evaluation feeds the right rows and the right (merged) predictions into it.
"""
import argparse
import json

import numpy as np
import pytest

from demoprof_ros.evaluation import evaluate as ev
from demoprof_ros.cli import eval_main
from demoprof_ros.training.datasets import read_dataset
from demoprof_ros.core.results import Detection
from demoprof_ros.core.taxonomy import CLASSES
from demoprof_ros.evaluation.card import render_card
from demoprof_ros.evaluation.detected_crops import FaceCropper
from demoprof_ros.evaluation.report import render_report

from helpers_eval import FakeScorer, one_hot_rows, write_images, write_labels

METRIC_KEYS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "confusion_matrix", "per_class")


def _settings(**kw):
    return ev.EvalSettings(progress=False, plots=False, **{"retrieval_k": 0, **kw})


# --- constructed cases (no model) ---------------------------------------------------------------------------


@pytest.fixture
def utk_like(tmp_path):
    """Six images with UTKFace's coarse race labels plus fine ones; one row each of unknown race and gender."""
    write_images(tmp_path / "images", 6)
    rows = [("images/img_00.jpg", "20-29", "Male", "Asian"),
            ("images/img_01.jpg", "20-29", "Female", "Asian"),
            ("images/img_02.jpg", "30-39", "Male", "Others"),
            ("images/img_03.jpg", "30-39", "Female", "White"),
            ("images/img_04.jpg", "40-49", "Male", ""),        # race unknown
            ("images/img_05.jpg", "40-49", "", "Black")]       # gender unknown
    return write_labels(tmp_path / "labels.csv", rows)


def _race_probs():
    """Fine arg-max and merged arg-max disagree on rows 0 and 2: scoring must merge probabilities."""
    races = CLASSES["race"]
    p = np.full((6, 7), 0.01)
    p[0, races.index("White")] = 0.30           # fine top: White; merged: Asian 0.50 (correct)
    p[0, races.index("East Asian")] = 0.25
    p[0, races.index("Southeast Asian")] = 0.25
    p[1, races.index("Black")] = 0.60           # wrong
    p[2, races.index("Indian")] = 0.32          # fine top: Indian; merged: Others 0.56 (correct)
    p[2, races.index("Latino_Hispanic")] = 0.28
    p[2, races.index("Middle Eastern")] = 0.28
    p[3, races.index("White")] = 0.90           # correct
    p[4, races.index("White")] = 0.90
    p[5, races.index("Black")] = 0.90           # correct
    return p / p.sum(axis=1, keepdims=True)


def test_coarse_vocabulary_merges_probabilities_and_counts_left_out(utk_like):
    samples, _ = read_dataset(utk_like)
    scorer = FakeScorer({"age": one_hot_rows("age", ["20-29", "30-39", "30-39", "30-39", "40-49", "0-2"]),
                         "gender": one_hot_rows("gender", ["Male", "Male", "Male", "Female", "Male", "Male"]),
                         "race": _race_probs()})
    out = ev.evaluate_samples(scorer, samples, _settings(min_group_size=1))
    race = out["attributes"]["race"]
    assert race["vocabulary"] == ["White", "Black", "Indian", "Asian", "Others"]
    assert "East Asian + Southeast Asian -> Asian" in race["merged"]
    assert race["n"] == 5 and race["left_out"] == {"no label": 1}
    # Rows 0, 2, 3, 5 right after merging (row 1 wrong); mapping each fine arg-max instead would give 2 of 5.
    assert race["metrics"]["accuracy"] == pytest.approx(4 / 5)
    matrix = np.array(race["metrics"]["confusion_matrix"])
    assert matrix[3, 3] == 1 and matrix[4, 4] == 1 and matrix[3, 1] == 1  # Asian, Others right; Asian -> Black
    assert out["attributes"]["gender"]["n"] == 5 and out["attributes"]["gender"]["left_out"] == {"no label": 1}
    assert out["attributes"]["age"]["metrics"]["accuracy"] == pytest.approx(4 / 6)
    # Fine 126-way task: only row 3 (White) has every label fine; the coarse task takes the 4 complete rows.
    joint, coarse = out["joint"], out["joint_coarse"]
    assert joint["n"] == 1 and joint["left_out"] == {"coarse race label": 3, "no race label": 1,
                                                     "no gender label": 1}
    assert coarse["n_descriptions"] == 9 * 2 * 5 and coarse["n"] == 4
    # Rows 0 (20-29 Male Asian), 2 (30-39 Male Others) and 3 (30-39 Female White) right; row 1 wrong.
    assert coarse["metrics"]["accuracy"] == pytest.approx(3 / 4)
    assert coarse["marginal_accuracy"]["race"] == pytest.approx(3 / 4)
    # Groups are formed from the data set's labels (coarse race names), unknown groups counted.
    by_rg = out["groups"]["gender"]["groupings"]["race/gender"]
    assert "Asian/Male" in by_rg["groups"] and by_rg["left_out"] == 1


def test_embeddings_computed_once_per_dataset(utk_like):
    samples, _ = read_dataset(utk_like)
    scorer = FakeScorer({"age": one_hot_rows("age", ["20-29"] * 6), "gender": one_hot_rows("gender", ["Male"] * 6),
                         "race": _race_probs()})
    scorer.batch_size = 64
    ev.evaluate_samples(scorer, samples, _settings(retrieval_k=3, min_group_size=1))
    assert scorer.encode_calls == 1  # attributes, joint task, groups and retrieval share one encoding


@pytest.mark.parametrize("attributes, n_descriptions", [(("gender",), 2), (("age", "race"), 63)])
def test_switched_off_attributes_are_not_scored(utk_like, attributes, n_descriptions):
    samples, _ = read_dataset(utk_like)
    probs = {"age": one_hot_rows("age", ["20-29"] * 6), "gender": one_hot_rows("gender", ["Male"] * 6),
             "race": _race_probs()}
    out = ev.evaluate_samples(FakeScorer(probs, attributes=attributes), samples, _settings(min_group_size=1))
    assert set(out["attributes"]) == set(attributes) == set(out["groups"])
    assert out["joint"]["n_descriptions"] == n_descriptions


def test_unreadable_image_is_counted_not_fatal(utk_like):
    (utk_like.parent / "images" / "img_02.jpg").write_bytes(b"not a jpeg")
    samples, _ = read_dataset(utk_like)
    scorer = FakeScorer({"age": one_hot_rows("age", ["20-29"] * 5), "gender": one_hot_rows("gender", ["Male"] * 5),
                         "race": _race_probs()[[0, 1, 3, 4, 5]]})
    out = ev.evaluate_samples(scorer, samples, _settings())
    assert out["images"]["scored"] == 5 and out["images"]["unreadable"] == 1
    assert "img_02.jpg" in out["images"]["unreadable_files"][0]["file"]


# --- --detect: the largest detected face, misses counted per group ------------------------------------------


class _Detector:
    """Finds one face covering the middle of every image except the calls numbered in `miss`."""

    name = "fake"

    def __init__(self, miss):
        self.miss, self.calls = set(miss), 0

    def detect(self, image):
        self.calls += 1
        if self.calls - 1 in self.miss:
            return []
        h, w = image.shape[:2]
        return [Detection((w / 4, h / 4, w / 2, h / 2), 0.9), Detection((0, 0, 3 * w / 4, 3 * h / 4), 0.9)]


@pytest.mark.parametrize("miss", [(), (1,), (1, 3)])
def test_detect_scores_found_faces_and_counts_misses_per_group(utk_like, miss):
    samples, _ = read_dataset(utk_like)
    kept = [i for i in range(6) if i not in miss]
    ages = ["20-29", "20-29", "30-39", "30-39", "40-49", "0-2"]  # all right but the last
    scorer = FakeScorer({"age": one_hot_rows("age", ages)[kept], "gender": one_hot_rows("gender", ["Male"] * 6)[kept],
                         "race": _race_probs()[kept]})
    crops = []
    scorer.encode_images = lambda faces, encode=scorer.encode_images: (crops.extend(faces), encode(faces))[1]
    cropper = FaceCropper(_Detector(miss), margin=0.0)
    out = ev.evaluate_samples(scorer, samples, _settings(detect="fake", min_group_size=1), crop=cropper)
    d = out["detection"]
    assert (d["detector"], d["margin"], d["images"], d["found"], d["no_face"]) == ("fake", 0.0, 6, 6 - len(miss),
                                                                                  len(miss))
    assert out["images"]["scored"] == 6 - len(miss) and out["images"]["unreadable"] == 0
    assert [c.shape[:2] for c in crops] == [(30, 30)] * len(kept)  # the larger face, margin 0: 3/4 of 40 px
    female_asian = d["found_by_group"]["race/gender"]["Asian/Female"]     # row 1
    assert female_asian == {"n": 1, "found": 0 if 1 in miss else 1}
    assert d["found_by_group"]["age"]["30-39"] == {"n": 2, "found": 1 if 3 in miss else 2}
    age = out["attributes"]["age"]
    assert age["n"] == len(kept) and age["metrics"]["accuracy"] == pytest.approx((len(kept) - 1) / len(kept))
    assert age["misses_wrong"] == {"n": 6, "misses": len(miss), "accuracy": pytest.approx(5 / 6 - len(miss) / 6)}
    assert out["attributes"]["race"]["misses_wrong"]["n"] == 5  # row 4 has no race label, missed or not
    results = {"model": {"name": "fake", "spec": "fake", "meta": {}}, "attributes": ["age", "gender", "race"],
               "created": "now", "settings": _settings(detect="fake").to_dict(),
               "datasets": {"utk": {"path": "labels.csv", "reader": {"rows": 6, "kept": 6, "skipped": 0,
                                                                      "counts": {}}, **out}}}
    report, card = render_report(results), render_card(results)
    assert "largest detected face is scored" in report and "misses wrong" in report
    for text in (report, card):
        assert f"found in {6 - len(miss)} of 6 images" in text
        assert ("Asian/Female 0/1" in text) == (1 in miss)


def test_detect_is_off_by_default(utk_like):
    samples, _ = read_dataset(utk_like)
    out = ev.evaluate_samples(FakeScorer({"age": one_hot_rows("age", ["20-29"] * 6),
                                          "gender": one_hot_rows("gender", ["Male"] * 6), "race": _race_probs()}),
                              samples, _settings())
    assert out["detection"] is None and "misses_wrong" not in out["attributes"]["age"]


def test_detect_mtcnn_end_to_end(shared_data, tmp_path):
    pytest.importorskip("facenet_pytorch", reason="detector wheels not installed (requirements-detect.txt)")
    out = tmp_path / "out"
    code = eval_main(["--model", "tiny", "--data", str(shared_data / "fairface_val_sample"), "--detect", "mtcnn",
                      "--margin", "0.1", "--limit", "6", "--output", str(out), "--no-progress", "--no-plots",
                      "--retrieval-k", "0"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["detect"] == "mtcnn" and results["settings"]["margin"] == 0.1
    d = results["datasets"]["fairface_val_sample"]["detection"]
    assert (d["detector"], d["margin"], d["images"]) == ("mtcnn", 0.1, 6)
    assert d["found"] >= 5 and d["found"] == results["datasets"]["fairface_val_sample"]["images"]["scored"]


@pytest.mark.parametrize("argv, message", [(["--detect", "mtcnn,nosuch"], "--detect"),
                                           (["--detect", ""], "--detect")])
def test_detect_bad_chain_exits_2_before_the_model_loads(tmp_path, utk_like, capsys, argv, message):
    code = _cli(["--model", "/nonexistent/model.safetensors", "--data", str(utk_like), "--output",
                 str(tmp_path / "out"), *argv])
    assert code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("text, value", [("auto", "auto"), ("0", 0.0), ("0.05", 0.05), ("2", 2.0)])
def test_margin_arg_takes_auto_or_a_number(text, value):
    assert ev.margin_arg(text) == value


@pytest.mark.parametrize("text", ["-0.1", "2.5", "nan", "wide", ""])
def test_margin_arg_refuses_the_rest(text):
    with pytest.raises(argparse.ArgumentTypeError, match="auto"):
        ev.margin_arg(text)


# --- the tiny model on shared data ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(shared_data, tmp_path_factory):
    """demoprof eval --model tiny on 12 FairFace + 12 UTKFace images, plus a CSV with bad rows."""
    tmp = tmp_path_factory.mktemp("eval")
    ff = shared_data / "fairface_val_sample"
    picked = [line.split(",")[0] for line in (ff / "labels.csv").read_text().splitlines()[1:4]]
    bad = write_labels(tmp / "bad" / "labels.csv", [
        (str(ff / picked[0]), "20-29", "Female", "White"),
        (str(ff / picked[1]), "", "Male", "Pacific Islander"),      # label the taxonomy lacks
        (str(ff / "images" / "no_such_file.jpg"), "20-29", "Male", "White"),
        (str(ff / picked[2]), "", "Male", "Indian"),               # age unknown
    ])
    out = tmp / "out"
    code = eval_main(["--model", "tiny", "--data", str(ff), str(shared_data / "utkface_crop_part1"), str(bad),
                      "--output", str(out), "--limit", "12", "--no-progress", "--batch-size", "8"])
    return code, out, json.loads((out / "results.json").read_text())


def test_tiny_end_to_end_writes_every_metric(tiny_run):
    code, out, results = tiny_run
    assert code == 0
    assert results["model"]["meta"]["untrained"] is True
    assert list(results["datasets"]) == ["fairface_val_sample", "utkface_crop_part1", "bad"]
    for name, ds in results["datasets"].items():
        for attribute in ("age", "gender", "race"):
            entry = ds["attributes"][attribute]
            assert all(k in entry["metrics"] for k in METRIC_KEYS), (name, attribute)
            assert 0.0 <= entry["ece"] <= 1.0
            assert (out / f"confusion_{name}_{attribute}.png").stat().st_size > 1000
        assert ds["retrieval"]["k"] == min(10, ds["images"]["scored"])
        assert set(ds["groups"]) == {"age", "gender", "race"}
    ff = results["datasets"]["fairface_val_sample"]
    assert ff["rows_evaluated"] == 12 and ff["joint"]["n"] == 12 and ff["joint_coarse"] is None
    assert all(k in ff["joint"]["metrics"] for k in ("accuracy", "macro_precision", "macro_recall", "macro_f1"))
    report = (out / "report.md").read_text()
    assert "Rows with every label known and fine-grained: **12 of 12**" in report


def test_tiny_utkface_scored_in_its_own_vocabulary(tiny_run):
    _, _, results = tiny_run
    utk = results["datasets"]["utkface_crop_part1"]
    race = utk["attributes"]["race"]
    assert race["vocabulary"] == ["White", "Black", "Indian", "Asian", "Others"]
    assert race["merged"] and np.array(race["metrics"]["confusion_matrix"]).sum() == 12
    coarse_rows = sum(race["metrics"]["per_class"][label]["support"] for label in ("Asian", "Others"))
    assert utk["joint"]["n"] == 12 - coarse_rows          # only fine-labelled rows in the 126-way task
    assert utk["joint"]["left_out"].get("coarse race label", 0) == coarse_rows
    assert utk["joint_coarse"]["n"] == 12 and utk["joint_coarse"]["n_descriptions"] == 90


def test_tiny_left_out_rows_are_counted_and_reported(tiny_run):
    _, out, results = tiny_run
    bad = results["datasets"]["bad"]
    assert bad["reader"]["rows"] == 4 and bad["reader"]["kept"] == 2
    assert bad["reader"]["counts"] == {"label not in taxonomy": 1, "missing file": 1}
    assert bad["attributes"]["age"]["n"] == 1 and bad["attributes"]["age"]["left_out"] == {"no label": 1}
    assert bad["joint"]["n"] == 1 and bad["joint"]["left_out"] == {"no age label": 1}
    report = (out / "report.md").read_text()
    assert "1 rows carry a label the FairFace taxonomy lacks" in report and "1 missing file" in report


def _cli(argv):
    parser = argparse.ArgumentParser()
    ev.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


@pytest.mark.parametrize("argv, message", [
    (["--attributes", "age,height"], "--attributes"),
    (["--data", "/nonexistent/labels.csv"], "/nonexistent"),
    (["--model", "/nonexistent/model.safetensors"], "/nonexistent/model.safetensors"),
])
def test_cli_bad_input_exits_2_with_a_message(tmp_path, utk_like, capsys, argv, message):
    base = {"--model": "tiny", "--data": str(utk_like), "--output": str(tmp_path / "out")}
    for i in range(0, len(argv), 2):
        base[argv[i]] = argv[i + 1]
    code = _cli([x for kv in base.items() for x in kv] + ["--no-progress"])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out" / "results.json").exists()
