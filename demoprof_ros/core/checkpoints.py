"""Reading checkpoint files safely: format detection, TorchScript trust, key, shape and value checks.

Weights are read as safetensors, or with `torch.load(weights_only=True)` passed explicitly, so that
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 cannot turn a load into full unpickling. Two things run code stored in
a file and need the user's opt-in (`allow_unsafe=True` / `--allow-unsafe`): full unpickling, and
TorchScript, whose archive code runs at load time (a scripted `__setstate__` can write files). The one
exception is OpenAI's published ViT-B-16.pt, recognised by its sha256. A file named `.safetensors` must be
safetensors. Any problem is one `ModelLoadError` naming the file, what was expected and the fix.

A checkpoint's architecture is read from its own metadata (validated: model_meta) or else recognised from
tensor shapes among the known configs. Shapes cannot tell attention heads apart, so unknown
architectures are refused rather than guessed. Weights that are NaN or infinite are refused.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import re
import struct
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .model_meta import (
    MAX_META_BYTES, MODEL_FILES, ModelLoadError, check_meta, expected_shapes, fix_for, known_configs, parse_meta_json,
)

log = logging.getLogger(__name__)

SAFETENSORS_META_KEY = "demoprof"   # safetensors metadata entry holding JSON {name, model_cfg, ...}
#: sha256 of OpenAI's published ViT-B-16.pt (the digest is the path of its download URL).
OPENAI_CLIP_SHA256 = "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"
#: TorchScript archives loaded without opt-in: sha256 -> what it is. Nothing else runs archive code unasked.
TRUSTED_TORCHSCRIPT: dict[str, str] = {OPENAI_CLIP_SHA256: "OpenAI CLIP ViT-B/16 (ViT-B-16.pt)"}

# FaRL's masked-image-modelling head: extra keys allowed in a checkpoint, kept for training.
MIM_PREFIXES = ("visual.mask_token", "visual.lm_transformer.", "visual.ln_lm.", "visual.lm_head.")
MIM_KEYS_TEXT = "visual.mask_token, visual.lm_transformer.*, visual.ln_lm.*, visual.lm_head.*"
# Entries of OpenAI's TorchScript state dict that are not weights.
JIT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


@dataclass
class Checkpoint:
    """Checked weights read from a file, before a model is built."""

    state_dict: dict[str, torch.Tensor]   # open_clip CLIP keys, exactly the model's
    mim_state: dict[str, torch.Tensor]    # FaRL MIM keys (may be empty)
    model_cfg: dict
    arch: str                             # known config name, or "custom" (a model_cfg from metadata)
    meta: dict                            # metadata stored with the weights (name, prompts, ...)
    source: Path


def is_mim_key(key: str) -> bool:
    return key.startswith(MIM_PREFIXES)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun.replace('key', 'keys', 1)}"


def _few(keys, n: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


# --- formats --------------------------------------------------------------------------------------------

def sniff(path: Path) -> str:
    """The file's form from its bytes: 'safetensors' | 'torchscript' | 'zip-code' | 'torch-zip' | 'zip-other'
    | 'corrupt-zip' | 'torch-legacy' | 'unknown'.

    'torchscript' is strict: one top folder holding data.pkl, constants.pkl and code/, as torch.jit.save
    writes. A zip with code/ or constants.pkl members that is not that is 'zip-code' (never loaded).
    """
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
        return _zip_form(names)
    if head[:1] == b"\x80":  # pickle protocol marker: torch.save's legacy format
        return "torch-legacy"
    return "unknown"


def _zip_form(names: list[str]) -> str:
    tops = {n.split("/", 1)[0] for n in names}
    inner = {n.split("/", 1)[1] for n in names if "/" in n}
    has_code = any(n.startswith("code/") for n in inner) or any("/code/" in n for n in names)
    has_constants = "constants.pkl" in inner or any(n.endswith("/constants.pkl") for n in names)
    if len(tops) == 1 and "data.pkl" in inner and "constants.pkl" in inner and any(
            n.startswith("code/") for n in inner):
        return "torchscript"
    if has_code or has_constants:
        return "zip-code"
    return "torch-zip" if len(tops) == 1 and "data.pkl" in inner else "zip-other"


def _corrupt(path: Path, kind: str | None, detail: str) -> ModelLoadError:
    again = fix_for(kind) if kind in MODEL_FILES else "`demoprof models fetch clip` or `demoprof models fetch farl`"
    return ModelLoadError(
        f"{path}: cannot read the checkpoint: the file is truncated or corrupt ({detail}); expected a complete "
        f"safetensors, PyTorch (.pt/.pth/.bin) or OpenAI TorchScript file. Fix: download it again with {again}")


def read_weights(path: Path, kind: str | None = None,
                 allow_unsafe: bool = False) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, metadata) from any supported file; the tensors still need checking."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: model file not found; expected a checkpoint file here. Fix: {fix_for(kind)}")
    try:
        if path.stat().st_size == 0:
            raise _corrupt(path, kind, "empty file")
        form = sniff(path)
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot open the file ({exc.strerror or exc}); expected a readable checkpoint. "
                             f"Fix: check the file's permissions, or copy it somewhere readable") from exc
    if path.suffix == ".safetensors" and form != "safetensors":
        raise ModelLoadError(
            f"{path}: named .safetensors but is not a safetensors file (it is {form.replace('-', ' ')} data); "
            f"expected the safetensors this project writes, which holds tensors only. Fix: {fix_for(kind)}")
    if form == "safetensors":
        return _read_safetensors(path, kind)
    if form == "torchscript":
        return _read_torchscript(path, kind, allow_unsafe), {}
    if form == "zip-code":
        raise ModelLoadError(
            f"{path}: zip archive with TorchScript code members (code/ or constants.pkl) but not a TorchScript "
            f"archive; not loaded, since archive code runs at load time; expected safetensors, a weights-only "
            f".pt/.pth or OpenAI's ViT-B-16.pt. Fix: {fix_for(kind)}")
    if form == "corrupt-zip":
        raise _corrupt(path, kind, "zip archive has no central directory")
    if form in ("unknown", "zip-other"):
        raise _corrupt(path, kind, "not a safetensors, PyTorch or TorchScript file")
    obj = _torch_load(path, kind, allow_unsafe)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # FaRL and most training scripts wrap the weights
    if not isinstance(obj, Mapping):
        raise ModelLoadError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors; expected "
                             f"a CLIP/FaRL state dict. Fix: {fix_for(kind)}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelLoadError(f"{path}: entries that are not tensors ({_few(map(str, bad))}); expected a state dict "
                             f"of tensors. Fix: {fix_for(kind)}")
    return dict(obj), {}


def _read_safetensors(path: Path, kind: str | None) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, kind, f"safetensors: {exc}") from exc
    if SAFETENSORS_META_KEY not in raw_meta:
        return tensors, {}
    try:
        meta = parse_meta_json(raw_meta[SAFETENSORS_META_KEY])
    except ValueError as exc:
        raise _corrupt(path, kind, f"bad {SAFETENSORS_META_KEY!r} metadata: {exc}") from exc
    return tensors, check_meta(meta, path)


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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_torchscript(path: Path, kind: str | None, allow_unsafe: bool) -> dict[str, torch.Tensor]:
    """The weights of a TorchScript archive: loaded (its code runs) only when trusted by sha256 or opted in."""
    digest = sha256_file(path)
    trusted = TRUSTED_TORCHSCRIPT.get(digest)
    if trusted is None and not allow_unsafe:
        kind_arg = kind if kind in MODEL_FILES else "clip"
        raise ModelLoadError(
            f"{path}: TorchScript archive (sha256 {digest}) that is not OpenAI's published ViT-B-16.pt; "
            f"TorchScript is code that runs when loaded, so it was refused; expected safetensors, a weights-only "
            f".pt/.pth, or OpenAI's ViT-B-16.pt (sha256 {OPENAI_CLIP_SHA256}). Fix: if you trust where the "
            f"file came from, convert it once with `demoprof models convert {path} --kind {kind_arg} "
            f"--allow-unsafe` and use the safe .safetensors it writes")
    if trusted is None:
        log.warning("%s: loading a TorchScript archive runs its code (allow_unsafe=True): only do this for files "
                    "from a trusted source", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notice
            module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelLoadError(
            f"{path}: TorchScript archive that torch.jit cannot read ({text}); expected OpenAI's "
            f"CLIP ViT-B-16.pt. Fix: {fix_for(kind or 'clip')}") from exc
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --- checking ----------------------------------------------------------------------------------------------

def check_weights(tensors: Mapping[str, torch.Tensor], path: Path, kind: str | None = None,
                  model_cfg: Mapping | None = None) -> tuple[dict, dict, dict, str]:
    """Split off MIM keys, identify the architecture and check every key, shape and value.

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
                             f"OpenAI CLIP keys such as visual.conv1.weight. Fix: {fix_for(kind)}")
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
            _check_finite({**core, **mim}, path, kind)
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
            f"Fix: {fix_for(kind)}")
    key = wrong[0]
    more = f" (and {len(wrong) - 1} more keys with wrong shapes)" if len(wrong) > 1 else ""
    raise ModelLoadError(
        f"{path}: wrong shape for {key}: expected {list(exp[key])} for {label}, got {list(got[key])}{more}. "
        f"Fix: {fix_for(kind)}")


def _check_finite(tensors: Mapping[str, torch.Tensor], path: Path, kind: str | None) -> None:
    bad = [k for k, v in tensors.items()
           if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all())]
    if bad:
        raise ModelLoadError(f"{path}: {_count(len(bad), 'key')} with NaN or infinite values ({_few(bad)}); "
                             f"expected finite weights (a diverged training run or a damaged file). "
                             f"Fix: {fix_for(kind)}")


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
                    f"names of a vision transformer block. Fix: {fix_for(kind or 'farl')}")
            want = exp[block_key]
        if shape != tuple(want):
            raise ModelLoadError(
                f"{path}: wrong shape for FaRL MIM key {key}: expected {list(want)} for a vision width of {width}, "
                f"got {list(shape)}. Fix: {fix_for(kind or 'farl')}")
    if "visual.lm_head.weight" in mim and "visual.lm_head.bias" in mim:
        if mim["visual.lm_head.weight"].shape[0] != mim["visual.lm_head.bias"].shape[0]:
            raise ModelLoadError(f"{path}: FaRL MIM lm_head weight and bias disagree on the vocabulary size. "
                                 f"Fix: {fix_for(kind or 'farl')}")


def read_checkpoint(path: str | Path, kind: str | None = None, allow_unsafe: bool = False,
                    model_cfg: Mapping | None = None, meta: Mapping | None = None) -> Checkpoint:
    """Read and check a checkpoint file (any supported form) without building a model."""
    path = Path(path).expanduser()
    tensors, file_meta = read_weights(path, kind, allow_unsafe)
    merged = {**file_meta, **(meta or {})}
    cfg = model_cfg or merged.get("model_cfg")
    core, mim, cfg, arch = check_weights(tensors, path, kind, cfg)
    return Checkpoint(core, mim, cfg, arch, merged, path)


def read_meta(directory: Path, meta_file: str = "meta.json") -> dict:
    """A fine-tuned directory's meta.json, schema-checked ({} when absent)."""
    meta_path = Path(directory) / meta_file
    if not meta_path.is_file():
        return {}
    fix = "restore it from the training run, or delete it to load the weights with the architecture read from " \
          "their shapes"
    if meta_path.stat().st_size > MAX_META_BYTES:
        raise ModelLoadError(f"{meta_path}: {meta_path.stat().st_size} bytes, too big for checkpoint metadata "
                             f"(limit {MAX_META_BYTES}); expected the small JSON save_checkpoint writes. Fix: {fix}")
    try:
        meta = parse_meta_json(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{meta_path}: not valid JSON ({exc}); expected the metadata save_checkpoint writes. "
                             f"Fix: {fix}") from exc
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}. Fix: restore it from "
                             f"the training run")
    return check_meta(meta, meta_path)
