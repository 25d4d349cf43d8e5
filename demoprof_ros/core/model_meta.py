"""What every model file is checked against: the known architectures, the metadata schema, the error type.

Metadata (a fine-tuned folder's meta.json, the JSON in a safetensors header) comes from files a user
was handed, so it is validated with a JSON schema before anything is built from it: `model_cfg` may only
hold the open_clip CLIP keys this project uses, with bounds (a 20,000-layer config is refused at once, and
keys such as `hf_model_name` / `timm_model_name`, which make open_clip download and build other models, are
refused outright); `mean` / `std` are three finite numbers (std > 0); NaN / Infinity are not JSON.
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Mapping

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
OPENAI_ARCH = "ViT-B-16-quickgelu"  # OpenAI CLIP ViT-B/16 and FaRL-B/16 in open_clip's naming
TINY_ALIASES = {"tiny": "tiny-64", "tiny-64": "tiny-64", "tiny-224": "tiny-224"}

# File names looked for in models_dir, best first (converted safetensors before the original downloads).
MODEL_FILES: dict[str, tuple[str, ...]] = {
    "clip": ("clip-vit-b-16.safetensors", "ViT-B-16.pt"),
    "farl": ("farl-b-16.safetensors", "FaRL-Base-Patch16-LAIONFace20M-ep64.pth",
             "FaRL-Base-Patch16-LAIONFace20M-ep16.pth"),
}
MODEL_TITLES = {"clip": "OpenAI CLIP ViT-B/16", "farl": "FaRL-Base-Patch16"}
ORIGINAL_FILES = {"clip": "ViT-B-16.pt", "farl": "FaRL-Base-Patch16-LAIONFace20M-ep64.pth"}  # as published

MAX_META_BYTES = 16 * 1024 * 1024  # a meta.json is a few KB; anything this big is not one


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says which file, what was expected and how to fix it."""


def _int(low: int, high: int) -> dict:
    return {"type": "integer", "minimum": low, "maximum": high}


def _triple(low: float, high: float, exclusive_low: bool = False) -> dict:
    bound = {"exclusiveMinimum": low} if exclusive_low else {"minimum": low}
    return {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "number", **bound, "maximum": high}}


# Bounds: well above ViT-L/14 (24 layers, width 1024), far below what costs seconds to refuse.
_SIZE = {"anyOf": [_int(16, 1024), {"type": "array", "minItems": 2, "maxItems": 2, "items": _int(16, 1024)}]}
MODEL_CFG_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["embed_dim", "vision_cfg", "text_cfg"],
    "properties": {
        "embed_dim": _int(1, 4096),
        "quick_gelu": {"type": "boolean"},
        "vision_cfg": {"oneOf": [{
            "type": "object", "additionalProperties": False, "required": ["layers", "width", "patch_size"],
            "properties": {"image_size": _SIZE, "layers": _int(1, 48), "width": _int(8, 4096),
                           "head_width": _int(8, 512), "patch_size": _int(1, 64),
                           "mlp_ratio": {"type": "number", "minimum": 0.25, "maximum": 16}},
        }, {  # a timm image tower (the shipped model, core/shipped_model.py); never downloads weights at load
            "type": "object", "additionalProperties": False, "required": ["timm_model_name"],
            "properties": {"image_size": _SIZE, "timm_model_name": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"},
                           "timm_model_pretrained": {"const": False}, "timm_pool": {"enum": ["avg", "max", ""]},
                           "timm_proj": {"enum": ["linear", "mlp", "none", ""]}},
        }]},
        "text_cfg": {
            "type": "object", "additionalProperties": False, "required": ["layers", "width", "heads"],
            "properties": {"context_length": _int(1, 77), "vocab_size": _int(1, 49408),
                           "width": _int(8, 4096), "heads": _int(1, 64), "layers": _int(1, 48),
                           "mlp_ratio": {"type": "number", "minimum": 0.25, "maximum": 16}},
        },
    },
}
#: How a model's attributes are scored (core/scorer.py): their own prompt ensembles, or the marginals of the
#: joint softmax over full descriptions (for models fine-tuned on descriptions only).
ATTRIBUTE_SCORING = ("prompts", "descriptions")


def declared_attribute_scoring(meta: Mapping[str, Any] | None) -> str:
    """The attribute scoring a checkpoint's metadata declares; "prompts" when it says none (CLIP, FaRL)."""
    return (meta or {}).get("attribute_scoring") or "prompts"


#: Context around the face box in a crop, as a fraction of the box, for models that declare none: FairFace's
#: own crops (CLIP and FaRL were evaluated on them) pad the face box by about this much on each side.
DEFAULT_CROP_MARGIN = 0.25
MAX_CROP_MARGIN = 2.0  # the largest margin a model may declare or a setting may ask for


def declared_crop_margin(meta: Mapping[str, Any] | None) -> float:
    """The crop margin a checkpoint was trained for (meta.json `crop_margin`), else DEFAULT_CROP_MARGIN.

    A model trained on tight crops (the shipped one: mostly UTKFace's) sees a smaller face than it
    learned on when the crop keeps FairFace's padding.
    """
    value = (meta or {}).get("crop_margin")
    return DEFAULT_CROP_MARGIN if value is None else float(value)


def crop_margin(setting: float | str, meta: Mapping[str, Any] | None) -> float:
    """The margin a `margin` setting means for this model: 'auto' = declared_crop_margin, else the number."""
    return declared_crop_margin(meta) if setting == "auto" else float(setting)


META_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 200},
        "format": {"type": "string", "maxLength": 100},
        "arch": {"type": "string", "maxLength": 100},
        "model_cfg": MODEL_CFG_SCHEMA,
        "mean": _triple(-10.0, 10.0),
        "std": _triple(0.0, 10.0, exclusive_low=True),
        "prompts": {"type": ["object", "null"]},
        "attribute_scoring": {"enum": list(ATTRIBUTE_SCORING)},
        "crop_margin": {"type": "number", "minimum": 0, "maximum": MAX_CROP_MARGIN},
    },
}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_meta_json(text: str | bytes) -> Any:
    """json.loads that refuses NaN / Infinity (Python's json accepts them; they are not JSON)."""
    return json.loads(text, parse_constant=_refuse_constant)


def meta_problem(meta: Any, schema: Mapping = META_SCHEMA) -> str | None:
    """What is wrong with checkpoint metadata (the most relevant schema error, shortened), or None."""
    import jsonschema

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(meta))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "the top level"
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    return f"{where}: {message}"


def check_meta(meta: Any, source: Path | str, schema: Mapping = META_SCHEMA) -> dict:
    """`meta` as a dict, or ModelLoadError naming the file and the offending entry."""
    problem = meta_problem(meta, schema)
    if problem is not None:
        raise ModelLoadError(
            f"{source}: invalid checkpoint metadata ({problem}); expected what save_checkpoint writes (model_cfg "
            f"with open_clip CLIP keys within bounds, mean/std as 3 finite numbers). Fix: restore the file from "
            f"the training run, or delete the metadata to load the weights by their shapes")
    return dict(meta)


# --- known architectures --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _known_configs_json() -> str:
    import open_clip
    cfg = open_clip.get_model_config(OPENAI_ARCH)
    if cfg is None:  # pragma: no cover - open_clip always ships it
        raise ModelLoadError(f"open_clip has no {OPENAI_ARCH} config; reinstall open_clip_torch==3.3.0")
    configs = {OPENAI_ARCH: cfg}
    for path in sorted(CONFIG_DIR.glob("*.json")):
        configs[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return json.dumps(configs)


def known_configs() -> dict[str, dict]:
    """Architectures recognised from shapes: OpenAI ViT-B/16 and the JSON configs shipped with the package."""
    return json.loads(_known_configs_json())


def model_config(name: str) -> dict:
    """The open_clip CLIP kwargs of a known architecture (e.g. "tiny-64", "ViT-B-16-quickgelu")."""
    configs = known_configs()
    name = TINY_ALIASES.get(name, name)
    if name not in configs:
        raise ModelLoadError(f"unknown model config {name!r}; expected one of {sorted(configs)}")
    return copy.deepcopy(configs[name])


@functools.lru_cache(maxsize=16)
def _expected_shapes(cfg_json: str) -> dict[str, tuple[int, ...]]:
    import open_clip
    import torch
    with torch.device("meta"):  # shapes only: no memory, no init cost even for ViT-B/16
        model = open_clip.model.CLIP(**json.loads(cfg_json))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def expected_shapes(model_cfg: Mapping) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of the model `model_cfg` describes (schema-checked first: see module doc)."""
    problem = meta_problem(dict(model_cfg), MODEL_CFG_SCHEMA)
    if problem is not None:
        raise ModelLoadError(f"invalid model_cfg ({problem})")
    return _expected_shapes(json.dumps(model_cfg, sort_keys=True))


# --- fix commands and messages ----------------------------------------------------------------------------

def fix_for(kind: str | None) -> str:
    """The command that fixes a bad or missing file of this kind."""
    if kind in MODEL_FILES:
        return (f"`demoprof models fetch {kind}` on a machine with internet, or "
                f"`demoprof models convert /path/to/{ORIGINAL_FILES[kind]} --kind {kind}` for a copy you already have")
    return ("point --model at a CLIP or FaRL ViT-B/16 checkpoint or a fine-tuned directory (see "
            "`demoprof models list`), or get one with `demoprof models fetch farl`")

