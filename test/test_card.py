"""`demoprof card`: the required sections, numbers taken from results.json, clear errors."""
import argparse
import json

import pytest

from demoprof_ros.evaluation import card
from demoprof_ros.evaluation import evaluate as ev

from helpers_eval import FakeScorer, one_hot_rows, write_images, write_labels

ROWS = [("images/img_00.jpg", "20-29", "Male", "White"), ("images/img_01.jpg", "20-29", "Female", "Black"),
        ("images/img_02.jpg", "60-69", "Female", "Asian"), ("images/img_03.jpg", "3-9", "Male", "Indian")]


@pytest.fixture
def results_dir(tmp_path):
    write_images(tmp_path / "data" / "images", len(ROWS))
    csv = write_labels(tmp_path / "data" / "labels.csv", ROWS)
    scorer = FakeScorer({"age": one_hot_rows("age", ["20-29", "30-39", "60-69", "3-9"]),
                         "gender": one_hot_rows("gender", ["Male", "Female", "Female", "Female"]),
                         "race": one_hot_rows("race", ["White", "Black", "East Asian", "White"])},
                        meta={"base_model": "farl", "seed": 3, "loss": {"mim": {"mask_ratio": 0.4}}})
    results = ev.evaluate(scorer, [csv], ev.EvalSettings(progress=False, plots=False, min_group_size=1))
    ev.write_outputs(results, tmp_path / "out", plots=False)
    return tmp_path / "out"


def test_card_has_every_required_section_and_the_measured_numbers(results_dir):
    path = card.write_card(results_dir)
    assert path == results_dir / "MODEL_CARD.md"
    text = path.read_text()
    headings = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert headings == list(card.REQUIRED_SECTIONS)
    for phrase in ("Surveillance", "Decisions about people", "perceived", "self-identified", "Article 5(1)(g)",
                   "attributes: [age, gender]", "Base model: farl", "seed: 3"):
        assert phrase in text, phrase
    # Numbers come from results.json: age 3 of 4 right, gender 3 of 4, race 3 of 4 (Asian merged).
    results = json.loads((results_dir / "results.json").read_text())
    age = results["datasets"]["data"]["attributes"]["age"]
    assert age["metrics"]["accuracy"] == pytest.approx(0.75)
    lo, hi = card.wilson(0.75, 4)
    assert f"| data | age | 4 | 75.0 [{100 * lo:.1f}, {100 * hi:.1f}] |" in text
    assert "Middle Eastern, Asian): East Asian + Southeast Asian -> Asian" in text
    assert "gender by race/gender" in text and "largest gap" in text


@pytest.mark.parametrize("p, n, expected", [(0.5, 100, (0.4038, 0.5962)), (0.0, 10, (0.0, 0.2775)),
                                            (1.0, 10, (0.7225, 1.0))])
def test_wilson_interval(p, n, expected):
    assert card.wilson(p, n) == pytest.approx(expected, abs=1e-4)


def test_card_for_an_unevaluated_checkpoint_says_so(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "meta.json").write_text(json.dumps({"name": "ft", "base_model": "clip", "seed": 1,
                                                "model_cfg": {"embed_dim": 512, "vision_cfg": {"image_size": 224}}}))
    text = card.write_card(ckpt).read_text()
    assert "Not evaluated yet" in text and "image size 224 px" in text
    assert [line[3:] for line in text.splitlines() if line.startswith("## ")] == list(card.REQUIRED_SECTIONS)


def _cli(argv):
    parser = argparse.ArgumentParser()
    card.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["card", *argv])
    return args.func(args)


def test_cli(results_dir, tmp_path, capsys):
    assert _cli([str(results_dir / "results.json"), "--output", str(tmp_path / "card" / "MODEL_CARD.md")]) == 0
    assert (tmp_path / "card" / "MODEL_CARD.md").is_file()
    (tmp_path / "empty").mkdir()
    assert _cli([str(tmp_path / "empty")]) == 2
    assert "no results.json" in capsys.readouterr().err
    (tmp_path / "x.json").write_text('{"foo": 1}')
    assert _cli([str(tmp_path / "x.json")]) == 2


def test_card_shows_baselines_beside_scores_and_groups_in_natural_order(results_dir):
    text = card.write_card(results_dir).read_text()
    # age truth 20-29, 20-29, 60-69, 3-9: majority 20-29 = 50.0 %, chance 1/9 = 11.1 %; macro F1 of the majority
    # answer 2*0.5/1.5/3 = 22.2 %, of chance (2pq/(p+q) per class, over 9 classes) 5.4 %.
    row = next(line for line in text.splitlines() if line.startswith("| data | age |"))
    assert row.endswith("| 50.0 / 11.1 | 66.7 | 22.2 / 5.4 |"), row
    assert "*majority* always answers" in text
    by_age = next(line for line in text.splitlines() if "by age**" in line)
    assert by_age.index("3-9 ") < by_age.index("20-29 ") < by_age.index("60-69 ")  # not 20-29, 3-9, 60-69
    report = (results_dir / "report.md").read_text()
    age = next(line for line in report.splitlines() if line.startswith("| age |"))
    assert "| 50.0 / 11.1 |" in age and "| 22.2 / 5.4 |" in age
    groups = next(line for line in report.splitlines() if line.startswith("- age accuracy by age:"))
    assert groups.index("3-9 ") < groups.index("20-29 ") < groups.index("60-69 ")
    assert "Majority / chance baselines: accuracy" in report


@pytest.mark.parametrize("supports, n_classes, majority, chance", [
    ({"a": 2, "b": 1, "c": 1, "d": 0}, 4, (0.5, 2 * 0.5 / 1.5 / 3), (0.25, (2 * .5 * .25 / .75 + 2 * 2 * .25 * .25 / .5) / 4)),
    ({"a": 10, "b": 0}, 2, (1.0, 1.0), (0.5, (2 * 1 * .5 / 1.5) / 2)),
])
def test_baselines(supports, n_classes, majority, chance):
    from demoprof_ros.evaluation.baselines import chance_baseline, majority_baseline

    metrics = {"per_class": {c: {"support": n} for c, n in supports.items()}, "classes": list(supports)}
    assert (majority_baseline(metrics)["accuracy"], majority_baseline(metrics)["macro_f1"]) == pytest.approx(majority)
    got = chance_baseline(metrics, n_classes)
    assert (got["accuracy"], got["macro_f1"]) == pytest.approx(chance)
    assert majority_baseline({"per_class": {}}) is None and chance_baseline({"per_class": {}}) is None


def test_group_order_follows_the_taxonomy():
    from demoprof_ros.evaluation.baselines import group_order

    assert group_order("age", ["20-29", "3-9", "more than 70", "0-2", "10-19"]) == \
        ["0-2", "3-9", "10-19", "20-29", "more than 70"]
    assert group_order("race/gender", ["White/Male", "Black/Female", "White/Female", "Asian/Male"]) == \
        ["White/Male", "White/Female", "Black/Female", "Asian/Male"]
