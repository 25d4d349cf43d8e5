"""Build CLIP, FaRL, fine-tuned and tiny models into one open_clip architecture, and save fine-tuned ones.

Every form ends in the same open_clip `CLIP` (OpenAI ViT-B/16 = `ViT-B-16-quickgelu`), so the scorer, the
trainer and the ROS node never care where the weights came from. Files are read and checked by
`checkpoints` (safe formats only unless `allow_unsafe=True`; metadata schema-checked by `model_meta`);
here a model is built from them and run once on a probe input, so weights that give NaN or infinity are
refused at load time, not discovered in the published results. Any problem is one `ModelLoadError`
naming the file, what was expected, and the command that fixes it.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .checkpoints import (  # noqa: F401 - re-exported: the loading API lives in models
    JIT_EXTRA_KEYS, MIM_KEYS_TEXT, MIM_PREFIXES, SAFETENSORS_META_KEY, Checkpoint, check_weights, is_mim_key,
    read_checkpoint, read_weights,
)
from .checkpoints import read_meta as _read_meta
from .model_meta import (  # noqa: F401 - re-exported
    CONFIG_DIR, MODEL_FILES, MODEL_TITLES, OPENAI_ARCH, ORIGINAL_FILES, TINY_ALIASES, ModelLoadError,
    MODEL_CFG_SCHEMA, expected_shapes, known_configs, meta_problem, model_config,
)
from .model_meta import fix_for as _fix
from .shipped_model import SHIPPED_NAME, find_shipped
from .transforms import OPENAI_MEAN, OPENAI_STD

log = logging.getLogger(__name__)

TOKENIZER_NAME = OPENAI_ARCH  # all supported models share CLIP's BPE tokenizer

CHECKPOINT_FILE = "model.safetensors"
META_FILE = "meta.json"
CHECKPOINT_FORMAT = "demoprof-checkpoint/1"

NAMED_SPECS = ("auto", "clip", "farl", "shipped", *TINY_ALIASES)
TINY_SEED = 0

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "half": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}

UNTRAINED_WARNING = ("UNTRAINED MODEL {name!r}: random weights, its age/gender/ethnicity labels mean NOTHING. "
                     "Use it only for smoke tests; get real weights with `demoprof models fetch farl` "
                     "(or `clip`) on a machine with internet.")


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


def build_model(model_cfg: Mapping) -> Any:
    """A randomly initialised open_clip CLIP in eval mode (model_cfg schema-checked first)."""
    import open_clip
    problem = meta_problem(dict(model_cfg), MODEL_CFG_SCHEMA)
    if problem is not None:
        raise ModelLoadError(f"invalid model_cfg ({problem}); expected open_clip CLIP kwargs within the bounds of "
                             f"model_meta.MODEL_CFG_SCHEMA")
    try:
        return open_clip.model.CLIP(**copy.deepcopy(dict(model_cfg))).eval()
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"invalid model_cfg {dict(model_cfg)!r}: {exc}") from exc


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


def read_meta(directory: Path) -> dict:
    """A fine-tuned directory's meta.json, schema-checked ({} when absent)."""
    return _read_meta(directory, META_FILE)


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
    loaded = LoadedModel(model=model, tokenizer=tokenizer, image_size=image_size, mean=mean, std=std, name=name,
                         model_cfg=copy.deepcopy(cfg), mim_state=mim, source=source, meta=meta)
    check_probe(loaded)
    return loaded


def check_probe(loaded: LoadedModel) -> None:
    """Run the model once on a grey probe image and one caption; ModelLoadError unless all is finite.

    Finite weights can still overflow (a huge logit_scale, a std near 0 in the metadata, fp16 range): this
    catches what would otherwise be published as "confidence": NaN with confident-looking labels.
    """
    param = next(loaded.model.parameters())
    mean = torch.tensor(loaded.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.std).view(1, 3, 1, 1)
    image = ((torch.full((1, 3, loaded.image_size, loaded.image_size), 0.5) - mean) / std)
    tokens = loaded.tokenizer(["a photo of a face"]).to(param.device)
    with torch.no_grad():
        features = (loaded.model.encode_image(image.to(param.device, param.dtype), normalize=True),
                    loaded.model.encode_text(tokens, normalize=True),
                    loaded.model.logit_scale.exp())
    if not all(bool(torch.isfinite(f.float()).all()) for f in features):
        where = loaded.source or loaded.name
        raise ModelLoadError(
            f"{where}: the model gives NaN or infinite outputs on a probe image (weights, logit_scale or the "
            f"mean/std in its metadata overflow in {param.dtype}); expected finite embeddings. Fix: use another "
            f"checkpoint (or dtype fp32), or {_fix(None)}")


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
    dirs = [d for d in models_dir.iterdir() if d.is_dir() and (d / CHECKPOINT_FILE).is_file()
            and d.name != SHIPPED_NAME]  # the shipped model is the last resort, not a user's fine-tuned run
    return sorted(dirs, key=lambda d: (d / CHECKPOINT_FILE).stat().st_mtime, reverse=True)


def load_model(spec: str | Path = "auto", device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32",
               models_dir: str | Path | None = None, allow_unsafe: bool = False) -> LoadedModel:
    """Load `spec`: "auto" | "clip" | "farl" | "shipped" | "tiny" | "tiny-64" | "tiny-224" | a file | a fine-tuned dir.

    "auto" takes the best present in models_dir: FaRL, then CLIP, then the newest fine-tuned dir, then the
    model shipped with the package (core/shipped_model.py), then the untrained tiny model (loud warning).
    """
    if spec is None or (isinstance(spec, str) and spec.strip() in ("", "~")):
        raise ModelLoadError(f"no model given ({spec!r}; a YAML null?); expected one of {', '.join(NAMED_SPECS)}, "
                             f"a checkpoint file or a fine-tuned directory. Fix: pass --model auto (or omit it)")
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
    if isinstance(spec, str) and spec == "shipped":
        shipped = find_shipped(mdir, package_copies=models_dir is None)
        if shipped is None:
            raise ModelLoadError(f"the shipped model ({SHIPPED_NAME}) is not installed in {mdir} nor next to the "
                                 f"package; expected {SHIPPED_NAME}/{CHECKPOINT_FILE}. Fix: `make shipped-model`")
        return _load_dir(shipped, dev, dt, allow_unsafe)
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
        shipped = find_shipped(mdir, package_copies=models_dir is None)
        if shipped is not None:
            log.info("auto model: the shipped %s (no CLIP/FaRL weights in %s)", SHIPPED_NAME, mdir)
            return _load_dir(shipped, dev, dt, allow_unsafe)
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
