"""Caption templates: single-attribute prompt ensembles and full demographic descriptions.

Zero-shot CLIP is sensitive to wording, so each class is described by several captions whose normalised
text embeddings are averaged (prompt ensembling). The full description ("a photo of a 20-29 year old East
Asian woman") is what the paper scores and what FLYP fine-tunes on. Everything here can be overridden from a
YAML file with the same keys as `PromptSet` (see config/prompts.yaml).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .taxonomy import AGE_GROUPS, ATTRIBUTE_NAMES, CLASSES, Description
from .yaml_files import read_yaml

_DEFAULT_WORDS: dict[str, dict[str, list[str]]] = {
    "age": {
        "0-2": ["0-2 year old"], "3-9": ["3-9 year old"], "10-19": ["10-19 year old"],
        "20-29": ["20-29 year old"], "30-39": ["30-39 year old"], "40-49": ["40-49 year old"],
        "50-59": ["50-59 year old"], "60-69": ["60-69 year old"], "more than 70": ["over 70 year old"],
    },
    "gender": {"Male": ["man", "male person"], "Female": ["woman", "female person"]},
    "race": {
        "White": ["White"], "Black": ["Black"], "Latino_Hispanic": ["Latino", "Hispanic"],
        "East Asian": ["East Asian"], "Southeast Asian": ["Southeast Asian"], "Indian": ["Indian"],
        "Middle Eastern": ["Middle Eastern"],
    },
}

_DEFAULT_TEMPLATES: dict[str, list[str]] = {
    "age": ["a photo of a {} person.", "a close-up photo of the face of a {} person.",
            "a cropped photo of a {} person's face."],
    "gender": ["a photo of a {}.", "a close-up photo of the face of a {}.", "a cropped photo of a {}'s face."],
    "race": ["a photo of a {} person.", "a close-up photo of the face of a {} person.",
             "a cropped photo of a {} person's face."],
}

# Nouns for the full description depend on the age group ("a 3-9 year old Black girl").
_DEFAULT_NOUNS: dict[str, dict[str, str]] = {
    "0-2": {"Male": "baby boy", "Female": "baby girl", "": "baby"},
    "3-9": {"Male": "boy", "Female": "girl", "": "child"},
    "10-19": {"Male": "teenage boy", "Female": "teenage girl", "": "teenager"},
    "*": {"Male": "man", "Female": "woman", "": "person"},
}

_DEFAULT_DESCRIPTION_TEMPLATES = [
    "a photo of a {description}.",
    "a close-up photo of the face of a {description}.",
    "a cropped face photo of a {description}.",
]


class PromptError(ValueError):
    """A prompt file or override that does not fit the taxonomy."""


@dataclass
class PromptSet:
    """Words and templates for every class; `load_prompts` merges a YAML file over the defaults."""

    words: dict[str, dict[str, list[str]]] = field(default_factory=lambda: _copy(_DEFAULT_WORDS))
    templates: dict[str, list[str]] = field(default_factory=lambda: _copy(_DEFAULT_TEMPLATES))
    nouns: dict[str, dict[str, str]] = field(default_factory=lambda: _copy(_DEFAULT_NOUNS))
    description_templates: list[str] = field(default_factory=lambda: list(_DEFAULT_DESCRIPTION_TEMPLATES))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        for attribute in ATTRIBUTE_NAMES:
            missing = [c for c in CLASSES[attribute] if not self.words.get(attribute, {}).get(c)]
            if missing:
                raise PromptError(f"prompts: no words for {attribute} classes {missing}")
            extra = set(self.words.get(attribute, {})) - set(CLASSES[attribute])
            if extra:
                raise PromptError(f"prompts: {attribute} has words for unknown classes {sorted(extra)}")
            templates = self.templates.get(attribute) or []
            if not templates or any("{}" not in t for t in templates):
                raise PromptError(f"prompts: {attribute} templates must be a non-empty list, each with '{{}}'")
        if not self.description_templates or any("{description}" not in t for t in self.description_templates):
            raise PromptError("prompts: description_templates must each contain '{description}'")
        if "*" not in self.nouns:
            raise PromptError("prompts: nouns needs a '*' entry (the default for age groups not listed)")

    def class_prompts(self, attribute: str, cls: str) -> list[str]:
        """The ensemble of captions describing one class of one attribute."""
        return [t.format(w) for t in self.templates[attribute] for w in self.words[attribute][cls]]

    def description_text(self, description: Description) -> str:
        """The words of a full description, e.g. '20-29 year old East Asian woman'."""
        nouns = self.nouns.get(description.age or "*", self.nouns["*"])
        noun = nouns.get(description.gender or "", self.nouns["*"].get(description.gender or "", "person"))
        parts = []
        if description.age is not None:
            parts.append(self.words["age"][description.age][0])
        if description.race is not None:
            parts.append(self.words["race"][description.race][0])
        parts.append(noun)
        return " ".join(parts)

    def description_prompts(self, description: Description) -> list[str]:
        """Every template applied to one full description (the ensemble used for joint scoring)."""
        text = self.description_text(description)
        return [t.format(description=text) for t in self.description_templates]

    def caption(self, description: Description, rng: random.Random | None = None) -> str:
        """One training caption (FLYP samples a template per step)."""
        prompts = self.description_prompts(description)
        return prompts[0] if rng is None else rng.choice(prompts)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def prompts_from_dict(data: dict[str, Any] | None) -> PromptSet:
    """Defaults with the given keys replaced (per attribute for `words`, `templates` and `nouns`)."""
    base = PromptSet()
    if not data:
        return base
    if not isinstance(data, dict):
        raise PromptError(f"prompts: expected a mapping, got {type(data).__name__}")
    unknown = set(data) - {f.name for f in fields(PromptSet)}
    if unknown:
        raise PromptError(f"prompts: unknown keys {sorted(unknown)}")
    merged = base.to_dict()
    for key, value in data.items():
        if isinstance(merged[key], dict) and isinstance(value, dict):
            for sub, subvalue in value.items():
                if key == "words" and isinstance(subvalue, dict):
                    merged[key].setdefault(sub, {}).update(
                        {c: [w] if isinstance(w, str) else list(w) for c, w in subvalue.items()})
                else:
                    merged[key][sub] = subvalue
        else:
            merged[key] = value
    return PromptSet(**merged)


def load_prompts(path: str | Path | None) -> PromptSet:
    """Prompt set from a YAML file (None: the defaults). Errors name the file."""
    if path is None or str(path) == "":
        return PromptSet()
    path = Path(path)
    data = read_yaml(path, PromptError, "prompts file", mapping=False)
    try:
        return prompts_from_dict(data)
    except PromptError as exc:
        raise PromptError(f"{path}: {exc}") from None


__all__ = ["PromptSet", "PromptError", "load_prompts", "prompts_from_dict", "AGE_GROUPS"]
