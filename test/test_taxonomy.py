"""Taxonomy and prompts: the class vocabulary everything else is expressed in."""
import pytest

from demoprof_ros.core import taxonomy as tx
from demoprof_ros.core.prompts import PromptError, PromptSet, load_prompts, prompts_from_dict


def test_class_counts_and_descriptions():
    assert (len(tx.AGE_GROUPS), len(tx.GENDERS), len(tx.RACES)) == (9, 2, 7)
    all_descriptions = tx.descriptions()
    assert len(all_descriptions) == 126 and len(set(all_descriptions)) == 126
    no_race = tx.descriptions(("age", "gender"))
    assert len(no_race) == 18 and all(d.race is None for d in no_race)


@pytest.mark.parametrize("attribute,value,expected", [
    ("age", "70+", "more than 70"), ("age", "more than 70", "more than 70"), ("age", "34", "30-39"),
    ("gender", "female", "Female"), ("gender", "Male", "Male"),
    ("race", "Latino", "Latino_Hispanic"), ("race", "east asian", "East Asian"), ("race", "Asian", "Asian"),
    ("race", "Others", "Others"), ("race", "", None),
])
def test_normalize_label(attribute, value, expected):
    assert tx.normalize_label(attribute, value) == expected


@pytest.mark.parametrize("attribute,value", [("race", "Pacific Islander"), ("gender", "robot"), ("age", "old"),
                                             ("height", "tall")])
def test_normalize_label_rejects(attribute, value):
    with pytest.raises(tx.LabelError, match=value if attribute != "height" else "unknown attribute"):
        tx.normalize_label(attribute, value)


@pytest.mark.parametrize("years,group", [(0, "0-2"), (2.9, "0-2"), (3, "3-9"), (19, "10-19"), (69, "60-69"),
                                         (70, "more than 70"), (116, "more than 70")])
def test_age_group(years, group):
    assert tx.age_group(years) == group


def test_coarse_classes_cover_fine_classes_once():
    covered = [c for fine in tx.COARSE_CLASSES["race"].values() for c in fine]
    assert len(covered) == len(set(covered)) and set(covered) <= set(tx.RACES)
    assert tx.coarse_of("race", "Asian") == ("East Asian", "Southeast Asian")
    assert tx.coarse_of("race", "White") == ("White",)


def test_description_text_follows_age_and_gender():
    prompts = PromptSet()
    assert prompts.description_text(tx.Description("20-29", "Female", "East Asian")) == \
        "20-29 year old East Asian woman"
    assert prompts.description_text(tx.Description("3-9", "Male", None)) == "3-9 year old boy"
    assert "a photo of a 20-29 year old East Asian woman." in prompts.description_prompts(
        tx.Description("20-29", "Female", "East Asian"))


def test_class_prompts_are_an_ensemble():
    prompts = PromptSet()
    latino = prompts.class_prompts("race", "Latino_Hispanic")
    assert len(latino) == len(prompts.templates["race"]) * 2
    assert any("Hispanic" in p for p in latino) and any("Latino" in p for p in latino)


def test_prompts_yaml_override(tmp_path):
    path = tmp_path / "prompts.yaml"
    path.write_text("words:\n  gender:\n    Male: [guy]\ntemplates:\n  gender: ['an image of a {}.']\n")
    prompts = load_prompts(path)
    assert prompts.class_prompts("gender", "Male") == ["an image of a guy."]
    assert prompts.class_prompts("gender", "Female") == ["an image of a woman.", "an image of a female person."]


@pytest.mark.parametrize("text,match", [
    ("words:\n  race:\n    Martian: [x]\n", "unknown classes"),
    ("templates:\n  age: ['no placeholder']\n", "templates"),
    ("colour: red\n", "unknown keys"),
    ("words: [unclosed\n", "not valid YAML"),
])
def test_prompts_yaml_errors_name_the_file(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PromptError, match=match) as info:
        load_prompts(path)
    assert "bad.yaml" in str(info.value)


def test_prompts_from_dict_round_trip():
    prompts = PromptSet()
    assert prompts_from_dict(prompts.to_dict()) == prompts
