"""The demographic attributes, their classes and the vocabularies other datasets use for them.

Class names are FairFace's CSV spellings, so labels from FairFace files need no mapping. Everything the
project predicts, trains on or reports is expressed in these classes; other vocabularies (UTKFace's race
codes, its coarse `Asian` / `Others`) are defined and their labels normalised here and nowhere else.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Iterator

AGE_GROUPS: tuple[str, ...] = (
    "0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70",
)
GENDERS: tuple[str, ...] = ("Male", "Female")
RACES: tuple[str, ...] = (
    "White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern",
)

#: Attribute names in the fixed order used for joint descriptions and reports.
ATTRIBUTE_NAMES: tuple[str, ...] = ("age", "gender", "race")
CLASSES: dict[str, tuple[str, ...]] = {"age": AGE_GROUPS, "gender": GENDERS, "race": RACES}

#: Middle year of each age group (ROS4HRI softbiometrics report age as a number).
AGE_MIDPOINTS: dict[str, float] = {
    "0-2": 1.0, "3-9": 6.0, "10-19": 15.0, "20-29": 25.0, "30-39": 35.0, "40-49": 45.0,
    "50-59": 55.0, "60-69": 65.0, "more than 70": 75.0,
}

#: Coarse labels of other datasets -> the fine classes they cover. Predictions are merged into these
#: when a dataset only has the coarse label (UTKFace `Asian`, `Others`); the merging itself is
#: demoprof_ros.evaluation.coarse, the only place that does it.
COARSE_CLASSES: dict[str, dict[str, tuple[str, ...]]] = {
    "race": {
        "Asian": ("East Asian", "Southeast Asian"),
        "Others": ("Latino_Hispanic", "Middle Eastern"),
    },
}

#: Labels some datasets use that no class here covers (counted and left out, never guessed).
UNMAPPABLE: dict[str, frozenset[str]] = {"race": frozenset({"Pacific Islander"})}

_ALIASES: dict[str, dict[str, str]] = {
    "age": {"70+": "more than 70", "more than 70": "more than 70", ">70": "more than 70"},
    "gender": {"male": "Male", "m": "Male", "man": "Male", "female": "Female", "f": "Female",
               "woman": "Female"},
    "race": {"latino": "Latino_Hispanic", "hispanic": "Latino_Hispanic", "latino hispanic": "Latino_Hispanic",
             "latino_hispanic": "Latino_Hispanic", "east_asian": "East Asian",
             "southeast_asian": "Southeast Asian", "middle_eastern": "Middle Eastern"},
}

#: UTKFace file-name codes (`age_gender_race_date.jpg`).
UTKFACE_GENDER: dict[str, str] = {"0": "Male", "1": "Female"}
UTKFACE_RACE: dict[str, str] = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}


class LabelError(ValueError):
    """A label that is not a class of the attribute, nor a known alias or coarse label."""


def age_group(years: float) -> str:
    """FairFace age group of an age in years."""
    if years < 0:
        raise LabelError(f"age must be >= 0, got {years}")
    bounds = ((3, "0-2"), (10, "3-9"), (20, "10-19"), (30, "20-29"), (40, "30-39"), (50, "40-49"),
              (60, "50-59"), (70, "60-69"))
    for upper, group in bounds:
        if years < upper:
            return group
    return "more than 70"


def normalize_label(attribute: str, value: str) -> str | None:
    """Map a dataset label to a class, a coarse label (see COARSE_CLASSES), or None when blank.

    Raises LabelError for a label nothing here knows, so that callers count and report it.
    """
    if attribute not in CLASSES:
        raise LabelError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTE_NAMES}")
    text = (value or "").strip()
    if not text:
        return None
    if text in CLASSES[attribute] or text in COARSE_CLASSES.get(attribute, {}):
        return text
    if text in UNMAPPABLE.get(attribute, ()):
        raise LabelError(f"{attribute} label {text!r} has no class in the FairFace taxonomy")
    alias = _ALIASES.get(attribute, {}).get(text.lower())
    if alias is not None:
        return alias
    for cls in CLASSES[attribute]:
        if cls.lower() == text.lower():
            return cls
    if attribute == "age" and text.isdigit():
        return age_group(int(text))
    raise LabelError(f"unknown {attribute} label {text!r}; expected one of {list(CLASSES[attribute])}")


def coarse_of(attribute: str, label: str) -> tuple[str, ...]:
    """The fine classes a (possibly coarse) label stands for."""
    coarse = COARSE_CLASSES.get(attribute, {})
    return coarse.get(label, (label,))


@dataclass(frozen=True)
class Description:
    """One full demographic description: a class per enabled attribute (None where switched off)."""

    age: str | None = None
    gender: str | None = None
    race: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in ATTRIBUTE_NAMES if getattr(self, name) is not None}


def descriptions(attributes: Iterable[str] = ATTRIBUTE_NAMES) -> list[Description]:
    """All combinations of the enabled attributes' classes (9 x 2 x 7 = 126 with all three on)."""
    enabled = [name for name in ATTRIBUTE_NAMES if name in set(attributes)]
    if not enabled:
        raise ValueError("at least one attribute must be enabled")
    combos: Iterator[tuple[str, ...]] = itertools.product(*(CLASSES[name] for name in enabled))
    return [Description(**dict(zip(enabled, combo))) for combo in combos]
