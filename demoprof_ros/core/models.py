"""Load CLIP, FaRL, fine-tuned and tiny models into one open_clip architecture.

Every form ends in the same open_clip `CLIP` (OpenAI ViT-B/16 = `ViT-B-16-quickgelu`), so the scorer, the
trainer and the ROS node never care where the weights came from. Files are read safely: safetensors, or
`torch.load(weights_only=True)`; OpenAI's TorchScript `ViT-B-16.pt` only through open_clip's OpenAI loader;
full unpickling only with `allow_unsafe=True`. Any problem is one `ModelLoadError` naming the file, what was
expected, and the command that fixes it.

A checkpoint's architecture is read from its own metadata (meta.json / safetensors metadata written by this
project) or else recognised from tensor shapes among the known configs. Shapes cannot tell attention heads
apart, so unknown architectures are refused rather than guessed.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import os
import re
import struct
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .transforms import OPENAI_MEAN, OPENAI_STD

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
OPENAI_ARCH = "ViT-B-16-quickgelu"  # OpenAI CLIP ViT-B/16 and FaRL-B/16 in open_clip's naming
TOKENIZER_NAME = OPENAI_ARCH        # all supported models share CLIP's BPE tokenizer

CHECKPOINT_FILE = "model.safetensors"
META_FILE = "meta.json"
SAFETENSORS_META_KEY = "demoprof"   # safetensors metadata entry holding JSON {name, model_cfg, ...}
CHECKPOINT_FORMAT = "demoprof-checkpoint/1"

# File names looked for in models_dir, best first (converted safetensors before the original downloads).
MODEL_FILES: dict[str, tuple[str, ...]] = {
    "clip": ("clip-vit-b-16.safetensors", "ViT-B-16.pt"),
    "farl": ("farl-b-16.safetensors", "FaRL-Base-Patch16-LAIONFace20M-ep64.pth",
             "FaRL-Base-Patch16-LAIONFace20M-ep16.pth"),
}
MODEL_TITLES = {"clip": "OpenAI CLIP ViT-B/16", "farl": "FaRL-Base-Patch16"}
ORIGINAL_FILES = {"clip": "ViT-B-16.pt", "farl": "FaRL-Base-Patch16-LAIONFace20M-ep64.pth"}  # as published
TINY_ALIASES = {"tiny": "tiny-64", "tiny-64": "tiny-64", "tiny-224": "tiny-224"}
NAMED_SPECS = ("auto", "clip", "farl", *TINY_ALIASES)
TINY_SEED = 0

# FaRL's masked-image-modelling head: extra keys allowed in a checkpoint, kept for training.
MIM_PREFIXES = ("visual.mask_token", "visual.lm_transformer.", "visual.ln_lm.", "visual.lm_head.")
MIM_KEYS_TEXT = "visual.mask_token, visual.lm_transformer.*, visual.ln_lm.*, visual.lm_head.*"
# Entries of OpenAI's TorchScript state dict that are not weights.
JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}

UNTRAINED_WARNING = ("UNTRAINED MODEL {name!r}: random weights, its age/gender/ethnicity labels mean NOTHING. "
                     "Use it only for smoke tests; get real weights with `demoprof models fetch farl` "
                     "(or `clip`) on a machine with internet.")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says which file, what was expected and how to fix it."""


@dataclass
class LoadedModel:
    """An open_clip CLIP in eval mode plus everything needed to feed it."""

    model: Any
    tokenizer: Callable[[list[str]], torch.Tensor]
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    name: str
    model_cfg: dict
    mim_state: dict[str, torch.Tensor] = field(default_factory=dict)
    source: Path | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class Checkpoint:
    """Checked weights read from a file, before a model is built."""

    state_dict: dict[str, torch.Tensor]   # open_clip CLIP keys, exactly the model's
    mim_state: dict[str, torch.Tensor]    # FaRL MIM keys (may be empty)
    model_cfg: dict
    arch: str                             # known config name, or "custom" (a model_cfg from metadata)
    meta: dict                            # metadata stored with the weights (name, prompts, ...)
    source: Path


# --- configuration --------------------------------------------------------------------------------------

def default_models_dir() -> Path:
    """$DEMOPROF_MODELS, else the checkout's models/ (source tree / editable install), else ~/.cache.

    A colcon workspace always gets ~/.cache/demoprof/models, plain or --symlink-install: the latter runs the
    package from build/<pkg>, whose setup.py is a symlink into the sources (not resolved here on purpose)."""
    env = os.environ.get("DEMOPROF_MODELS")
    if env:
        return Path(env).expanduser()
    root = Path(__file__).parents[2]
    if (root / "models").is_dir() and (root / "setup.py").is_file() and not (root / "setup.py").is_symlink():
        return root / "models"
    return Path.home() / ".cache" / "demoprof" / "models"


def known_configs() -> dict[str, dict]:
    """Architectures recognised from shapes: OpenAI ViT-B/16 and the JSON configs shipped with the package."""
    configs = {OPENAI_ARCH: _openai_cfg()}
    for path in sorted(CONFIG_DIR.glob("*.json")):
        configs[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return configs


def _openai_cfg() -> dict:
    import open_clip
    cfg = open_clip.get_model_config(OPENAI_ARCH)
    if cfg is None:  # pragma: no cover - open_clip always ships it
        raise ModelLoadError(f"open_clip has no {OPENAI_ARCH} config; reinstall open_clip_torch==3.3.0")
    return cfg


def model_config(name: str) -> dict:
    """The open_clip CLIP kwargs of a known architecture (e.g. "tiny-64", "ViT-B-16-quickgelu")."""
    configs = known_configs()
    name = TINY_ALIASES.get(name, name)
    if name not in configs:
        raise ModelLoadError(f"unknown model config {name!r}; expected one of {sorted(configs)}")
    return copy.deepcopy(configs[name])


def build_model(model_cfg: Mapping) -> Any:
    """A randomly initialised open_clip CLIP in eval mode."""
    import open_clip
    try:
        return open_clip.model.CLIP(**copy.deepcopy(dict(model_cfg))).eval()
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"invalid model_cfg {dict(model_cfg)!r}: {exc}") from exc


@functools.lru_cache(maxsize=16)
def _expected_shapes(cfg_json: str) -> dict[str, tuple[int, ...]]:
    import open_clip
    with torch.device("meta"):  # shapes only: no memory, no init cost even for ViT-B/16
        model = open_clip.model.CLIP(**json.loads(cfg_json))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def expected_shapes(model_cfg: Mapping) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of the model `model_cfg` describes."""
    return _expected_shapes(json.dumps(model_cfg, sort_keys=True))


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ModelLoadError(f"unsupported dtype {dtype}; expected fp32, fp16 or bf16")
        return dtype
    key = str(dtype).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ModelLoadError(f"unsupported dtype {dtype!r}; expected fp32, fp16 or bf16")
    return DTYPES[key]


def parse_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"invalid device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available here; use device='cpu'")
    return dev


def is_mim_key(key: str) -> bool:
    return key.startswith(MIM_PREFIXES)


# --- fix commands and messages ----------------------------------------------------------------------------

def _fix(kind: str | None) -> str:
    """The command that fixes a bad or missing file of this kind."""
    if kind in MODEL_FILES:
        return (f"`demoprof models fetch {kind}` on a machine with internet, or "
                f"`demoprof models convert /path/to/{ORIGINAL_FILES[kind]} --kind {kind}` for a copy you already have")
    return ("point --model at a CLIP or FaRL ViT-B/16 checkpoint or a fine-tuned directory (see "
            "`demoprof models list`), or get one with `demoprof models fetch farl`")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun.replace('key', 'keys', 1)}"


def _few(keys, n: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


# --- reading files ----------------------------------------------------------------------------------------

def _sniff(path: Path) -> str:
    """'safetensors' | 'jit' | 'torch-zip' | 'torch-legacy' | 'unknown' | 'corrupt-zip' from the bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n < 100_000_000:
            return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return "corrupt-zip"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "jit"
        return "torch-zip"
    if head[:1] == b"\x80":  # pickle protocol marker: torch.save's legacy format
        return "torch-legacy"
    return "unknown"


def _corrupt(path: Path, kind: str | None, detail: str) -> ModelLoadError:
    again = _fix(kind) if kind in MODEL_FILES else "`demoprof models fetch clip` or `demoprof models fetch farl`"
    return ModelLoadError(
        f"{path}: cannot read the checkpoint: the file is truncated or corrupt ({detail}); expected a complete "
        f"safetensors, PyTorch (.pt/.pth/.bin) or OpenAI TorchScript file. Fix: download it again with {again}")


def read_weights(path: Path, kind: str | None = None,
                 allow_unsafe: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) from any supported file; the tensors still need checking."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found; expected a checkpoint file here. Fix: {_fix(kind)}")
    try:
        if path.stat().st_size == 0:
            raise _corrupt(path, kind, "empty file")
        form = _sniff(path)
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot open the file ({exc.strerror or exc}); expected a readable checkpoint. "
                             f"Fix: check the file's permissions, or copy it somewhere readable") from exc
    meta: dict = {}
    if form == "safetensors":
        from safetensors import SafetensorError, safe_open
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                raw_meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise _corrupt(path, kind, f"safetensors: {exc}") from exc
        if SAFETENSORS_META_KEY in raw_meta:
            try:
                meta = json.loads(raw_meta[SAFETENSORS_META_KEY])
            except json.JSONDecodeError as exc:
                raise _corrupt(path, kind, f"bad {SAFETENSORS_META_KEY!r} metadata: {exc}") from exc
        return tensors, meta
    if form == "jit":
        return _read_openai_jit(path, kind), meta
    if form == "corrupt-zip":
        raise _corrupt(path, kind, "zip archive has no central directory")
    if form == "unknown":
        raise _corrupt(path, kind, "not a safetensors, PyTorch or TorchScript file")
    obj = _torch_load(path, kind, allow_unsafe)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # FaRL and most training scripts wrap the weights
    if not isinstance(obj, Mapping):
        raise ModelLoadError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors; expected "
                             f"a CLIP/FaRL state dict. Fix: {_fix(kind)}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelLoadError(f"{path}: entries that are not tensors ({_few(map(str, bad))}); expected a state dict "
                             f"of tensors. Fix: {_fix(kind)}")
    return dict(obj), meta


def _torch_load(path: Path, kind: str | None, allow_unsafe: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... by case
        text = str(exc)
        blocked = re.search(r"Unsupported (?:global: GLOBAL (\S+)|operand[^\n.]*)", text)
        if "Weights only load failed" not in text or blocked is None:
            detail = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()), text.strip())
            raise _corrupt(path, kind, (detail or type(exc).__name__)[:200]) from exc
        if not allow_unsafe:
            what = f" ({blocked.group(1)})" if blocked.group(1) else ""
            kind_arg = kind if kind in MODEL_FILES else "clip|farl"
            raise ModelLoadError(
                f"{path}: holds Python objects besides tensors{what}; loading it needs full unpickling, which can "
                f"run arbitrary code, so it was refused; expected a state dict of tensors (safetensors or a "
                f"weights-only .pt/.pth). Fix: if you trust where the file came from, convert it once with "
                f"`demoprof models convert {path} --kind {kind_arg} --allow-unsafe` (or pass allow_unsafe=True) "
                f"and use the safe .safetensors it writes") from exc
    log.warning("%s: full unpickling (allow_unsafe=True): only do this for files from a trusted source", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise _corrupt(path, kind, (str(exc).splitlines() or [type(exc).__name__])[0][:200]) from exc


def _read_openai_jit(path: Path, kind: str | None) -> dict[str, torch.Tensor]:
    """OpenAI's TorchScript archive through open_clip's own OpenAI loader (no hand-made unpickling)."""
    import open_clip
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation notices
            model = open_clip.load_openai_model(str(path), precision="fp32", device="cpu")
    except Exception as exc:
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelLoadError(
            f"{path}: TorchScript archive that open_clip's OpenAI loader cannot read ({text}); expected OpenAI's "
            f"CLIP ViT-B-16.pt. Fix: {_fix(kind or 'clip')}") from exc
    return {k: v.detach() for k, v in model.state_dict().items()}


# --- checking ----------------------------------------------------------------------------------------------

def check_weights(tensors: Mapping[str, torch.Tensor], path: Path, kind: str | None = None,
                  model_cfg: Mapping | None = None) -> tuple[dict, dict, dict, str]:
    """Split off MIM keys, identify the architecture and check every key and shape.

    Returns (clip_state_dict, mim_state, model_cfg, arch). `model_cfg` (from metadata) wins over shape
    recognition because shapes cannot tell head counts apart.
    """
    sd = {k.removeprefix("module."): v for k, v in tensors.items()}
    for key in JIT_EXTRA_KEYS:
        sd.pop(key, None)
    mim = {k: v for k, v in sd.items() if is_mim_key(k)}
    core = {k: v for k, v in sd.items() if not is_mim_key(k)}
    if not core:
        raise ModelLoadError(f"{path}: holds no CLIP weights (0 tensors besides FaRL MIM keys); expected open_clip / "
                             f"OpenAI CLIP keys such as visual.conv1.weight. Fix: {_fix(kind)}")
    if "logit_scale" in core and core["logit_scale"].numel() == 1:
        core["logit_scale"] = core["logit_scale"].reshape(())

    candidates = [("metadata", dict(model_cfg))] if model_cfg else list(known_configs().items())
    got = {k: tuple(v.shape) for k, v in core.items()}
    scored = []
    for arch, cfg in candidates:
        try:
            exp = expected_shapes(cfg)
        except Exception as exc:
            raise ModelLoadError(f"{path}: its metadata holds an invalid model_cfg ({exc}); expected open_clip CLIP "
                                 f"kwargs. Fix: re-save it with demoprof_ros.models.save_checkpoint") from exc
        missing, unexpected = exp.keys() - got.keys(), got.keys() - exp.keys()
        wrong = [k for k in exp if k in got and exp[k] != got[k]]
        if not missing and not unexpected and not wrong:
            _check_mim(mim, exp, path, kind)
            if arch == "metadata":  # name it when it is a known config, else "custom"
                arch = next((n for n, c in known_configs().items() if c == cfg), "custom")
            return core, mim, copy.deepcopy(cfg), arch
        scored.append((len(missing) + len(unexpected), len(wrong), arch, exp, missing, unexpected, wrong))
    _, _, arch, exp, missing, unexpected, wrong = min(scored, key=lambda s: (s[0], s[1]))
    label = "the architecture in its metadata" if arch == "metadata" else f"{arch} (closest known architecture)"
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{_count(len(missing), 'expected key')} missing ({_few(missing)})")
        if unexpected:
            parts.append(f"{_count(len(unexpected), 'unexpected key')} ({_few(unexpected)})")
        raise ModelLoadError(
            f"{path}: not a CLIP/FaRL checkpoint of a known layout: {' and '.join(parts)}; expected the open_clip / "
            f"OpenAI CLIP keys of {label}, with only FaRL MIM keys ({MIM_KEYS_TEXT}) as extras. "
            f"Fix: {_fix(kind)}")
    key = wrong[0]
    more = f" (and {len(wrong) - 1} more keys with wrong shapes)" if len(wrong) > 1 else ""
    raise ModelLoadError(
        f"{path}: wrong shape for {key}: expected {list(exp[key])} for {label}, got {list(got[key])}{more}. "
        f"Fix: {_fix(kind)}")


def _check_mim(mim: Mapping[str, torch.Tensor], exp: Mapping[str, tuple], path: Path, kind: str | None) -> None:
    """MIM tensors must fit the vision tower they were trained with."""
    if not mim:
        return
    width = exp["visual.class_embedding"][0]
    block0 = "visual.transformer.resblocks.0."
    for key, value in mim.items():
        shape = tuple(value.shape)
        if key == "visual.mask_token" or key.startswith("visual.ln_lm."):
            want = (width,)
        elif key == "visual.lm_head.weight":
            want = (shape[0] if shape else 0, width)
        elif key == "visual.lm_head.bias":
            want = shape[:1] if shape else (0,)
        else:  # visual.lm_transformer.resblocks.N.<the same names as a vision block>
            parts = key.split(".", 4)
            block_key = block0 + parts[4] if len(parts) == 5 and parts[2] == "resblocks" else None
            if block_key not in exp:
                raise ModelLoadError(
                    f"{path}: unexpected FaRL MIM key {key}; expected visual.lm_transformer.resblocks.N.* with the "
                    f"names of a vision transformer block. Fix: {_fix(kind or 'farl')}")
            want = exp[block_key]
        if shape != tuple(want):
            raise ModelLoadError(
                f"{path}: wrong shape for FaRL MIM key {key}: expected {list(want)} for a vision width of {width}, "
                f"got {list(shape)}. Fix: {_fix(kind or 'farl')}")
    if "visual.lm_head.weight" in mim and "visual.lm_head.bias" in mim:
        if mim["visual.lm_head.weight"].shape[0] != mim["visual.lm_head.bias"].shape[0]:
            raise ModelLoadError(f"{path}: FaRL MIM lm_head weight and bias disagree on the vocabulary size. "
                                 f"Fix: {_fix(kind or 'farl')}")


def read_checkpoint(path: str | Path, kind: str | None = None, allow_unsafe: bool = False,
                    model_cfg: Mapping | None = None, meta: Mapping | None = None) -> Checkpoint:
    """Read and check a checkpoint file (any supported form) without building a model."""
    path = Path(path).expanduser()
    tensors, file_meta = read_weights(path, kind, allow_unsafe)
    merged = {**file_meta, **(meta or {})}
    cfg = model_cfg or merged.get("model_cfg")
    core, mim, cfg, arch = check_weights(tensors, path, kind, cfg)
    return Checkpoint(core, mim, cfg, arch, merged, path)


# --- building LoadedModel ----------------------------------------------------------------------------------

def _finish(model, cfg: dict, name: str, device, dtype, mim=None, source=None, meta=None) -> LoadedModel:
    import open_clip
    model = model.to(device=device, dtype=dtype).eval()
    meta = dict(meta or {})
    context_length = int(cfg.get("text_cfg", {}).get("context_length", 77))
    tokenizer = open_clip.get_tokenizer(TOKENIZER_NAME, context_length=context_length)
    vision = cfg.get("vision_cfg", {})
    image_size = vision.get("image_size", 224)
    image_size = int(image_size[0] if isinstance(image_size, (list, tuple)) else image_size)
    mean = tuple(float(x) for x in meta.get("mean", OPENAI_MEAN))
    std = tuple(float(x) for x in meta.get("std", OPENAI_STD))
    mim = {k: v.to(device) for k, v in (mim or {}).items()}
    return LoadedModel(model=model, tokenizer=tokenizer, image_size=image_size, mean=mean, std=std, name=name,
                       model_cfg=copy.deepcopy(cfg), mim_state=mim, source=source, meta=meta)


def _from_checkpoint(ckpt: Checkpoint, name: str, device, dtype) -> LoadedModel:
    model = build_model(ckpt.model_cfg)
    model.load_state_dict(ckpt.state_dict, strict=True)
    meta = {**ckpt.meta, "arch": ckpt.arch}
    meta.pop("model_cfg", None)
    return _finish(model, ckpt.model_cfg, name, device, dtype, ckpt.mim_state, ckpt.source, meta)


def load_tiny(name: str = "tiny", device="cpu", dtype="fp32") -> LoadedModel:
    """An untrained tiny model (fixed seed) for smoke runs and tests; warns loudly."""
    arch = TINY_ALIASES[name]
    cfg = model_config(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = build_model(cfg)
    warning = UNTRAINED_WARNING.format(name=arch)
    log.warning(warning)
    return _finish(model, cfg, arch, parse_device(device), parse_dtype(dtype),
                   meta={"untrained": True, "warning": warning, "arch": arch})


def find_model_file(kind: str, models_dir: Path) -> Path | None:
    """The best file of `kind` ("clip" | "farl") present in models_dir."""
    for name in MODEL_FILES[kind]:
        if (models_dir / name).is_file():
            return models_dir / name
    return None


def find_finetuned(models_dir: Path) -> list[Path]:
    """Fine-tuned checkpoint directories in models_dir, newest first."""
    if not models_dir.is_dir():
        return []
    dirs = [d for d in models_dir.iterdir() if d.is_dir() and (d / CHECKPOINT_FILE).is_file()]
    return sorted(dirs, key=lambda d: (d / CHECKPOINT_FILE).stat().st_mtime, reverse=True)


def read_meta(directory: Path) -> dict:
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{meta_path}: not valid JSON ({exc}); expected the metadata save_checkpoint writes. "
                             f"Fix: restore it from the training run, or delete it to load the weights with the "
                             f"architecture read from their shapes") from exc
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}. Fix: restore it from "
                             f"the training run")
    return meta


def load_model(spec: str | Path = "auto", device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32",
               models_dir: str | Path | None = None, allow_unsafe: bool = False) -> LoadedModel:
    """Load `spec`: "auto" | "clip" | "farl" | "tiny" | "tiny-64" | "tiny-224" | a checkpoint file | a fine-tuned dir.

    "auto" takes the best present in models_dir: FaRL, then CLIP, then the newest fine-tuned dir, then the
    untrained tiny model (with a loud warning).
    """
    dev, dt = parse_device(device), parse_dtype(dtype)
    mdir = Path(models_dir).expanduser() if models_dir else default_models_dir()
    if isinstance(spec, str) and spec in TINY_ALIASES:
        return load_tiny(spec, dev, dt)
    if isinstance(spec, str) and spec in MODEL_FILES:
        path = find_model_file(spec, mdir)
        if path is None:
            raise ModelLoadError(
                f"{MODEL_TITLES[spec]} weights not found in {mdir} (looked for {', '.join(MODEL_FILES[spec])}); "
                f"expected one of those files there (or set $DEMOPROF_MODELS / models_dir). Fix: {_fix(spec)}")
        return _from_checkpoint(read_checkpoint(path, spec, allow_unsafe), spec, dev, dt)
    if isinstance(spec, str) and spec == "auto":
        for kind in ("farl", "clip"):
            path = find_model_file(kind, mdir)
            if path is not None:
                log.info("auto model: %s from %s", kind, path)
                return _from_checkpoint(read_checkpoint(path, kind, allow_unsafe), kind, dev, dt)
        finetuned = find_finetuned(mdir)
        if finetuned:
            log.info("auto model: fine-tuned %s", finetuned[0])
            return _load_dir(finetuned[0], dev, dt, allow_unsafe)
        log.warning("no model weights in %s; falling back to the untrained tiny model. Fix: %s", mdir, _fix("farl"))
        return load_tiny("tiny", dev, dt)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_dir(path, dev, dt, allow_unsafe)
    if not path.exists():
        raise ModelLoadError(
            f"{path}: model file not found; expected one of {', '.join(NAMED_SPECS)}, a checkpoint file "
            f"(.safetensors/.pt/.pth/.bin) or a fine-tuned directory with {CHECKPOINT_FILE} and {META_FILE}. "
            f"Fix: check the path, or run `demoprof models list` to see what is in {mdir}")
    ckpt = read_checkpoint(path, None, allow_unsafe)
    name = str(ckpt.meta.get("name") or path.stem)
    return _from_checkpoint(ckpt, name, dev, dt)


def _load_dir(directory: Path, device, dtype, allow_unsafe: bool) -> LoadedModel:
    weights = directory / CHECKPOINT_FILE
    if not weights.is_file():
        raise ModelLoadError(
            f"{directory}: no {CHECKPOINT_FILE} in this directory; expected a fine-tuned checkpoint directory "
            f"({CHECKPOINT_FILE} + {META_FILE}, as written by save_checkpoint / demoprof-train). Fix: point --model "
            f"at the run's output directory or at a checkpoint file")
    meta = read_meta(directory)
    ckpt = read_checkpoint(weights, None, allow_unsafe, model_cfg=meta.get("model_cfg"), meta=meta)
    name = str(ckpt.meta.get("name") or directory.name)
    return _from_checkpoint(ckpt, name, device, dtype)


# --- writing -----------------------------------------------------------------------------------------------

def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> Path:
    """Atomically write tensors plus JSON metadata (model_cfg, name, ...) readable by read_weights."""
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(data, tmp, metadata={SAFETENSORS_META_KEY: json.dumps(dict(meta), default=str),
                                       "format": CHECKPOINT_FORMAT})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def save_checkpoint(out_dir: str | Path, model, model_cfg: Mapping, meta: Mapping,
                    mim_state: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write `model.safetensors` + `meta.json` into out_dir; `load_model(out_dir)` reads them back.

    meta is free-form JSON (name, base model, prompts, metrics ...); model_cfg is stored in both files so
    the weights stay loadable on their own.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    bad = [k for k in (mim_state or {}) if not is_mim_key(k)]
    if bad:
        raise ValueError(f"mim_state keys must start with one of {MIM_PREFIXES}, got {bad[:4]}")
    tensors = dict(model.state_dict())
    tensors.update(mim_state or {})
    full_meta = {"format": CHECKPOINT_FORMAT, "name": out.name,
                 "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 **dict(meta), "model_cfg": copy.deepcopy(dict(model_cfg))}
    write_safetensors(out / CHECKPOINT_FILE, tensors, {k: full_meta[k] for k in ("name", "model_cfg", "format")})
    tmp = out / (META_FILE + ".tmp")
    tmp.write_text(json.dumps(full_meta, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out / META_FILE)
    return out


def describe_mim(mim_state: Mapping[str, torch.Tensor]) -> dict:
    """Shape facts of a FaRL MIM head (layers, width, vocab_size) so training can rebuild it; {} when absent."""
    if not mim_state:
        return {}
    layers = {k.split(".")[3] for k in mim_state if k.startswith("visual.lm_transformer.resblocks.")}
    head = mim_state.get("visual.lm_head.weight")
    token = mim_state.get("visual.mask_token")
    return {"layers": len(layers), "width": int(token.shape[0]) if token is not None else None,
            "vocab_size": int(head.shape[0]) if head is not None else None}
