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
