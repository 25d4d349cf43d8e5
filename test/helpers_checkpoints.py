"""Real tiny checkpoint files in every form users have, for loader, zoo and training tests.

Each writer takes a tiny open_clip CLIP (random weights, fixed seed) and writes the file the way the
original tool would: open_clip state dicts (torch.save / safetensors), OpenAI's key layout written from
OpenAI's own key names, an OpenAI TorchScript archive (fp16 weights, like ViT-B-16.pt), a FaRL `.pth`
(`{"state_dict": ...}` with MIM keys) and broken variants. No weights are downloaded.
"""
from __future__ import annotations

import argparse
import copy
import json
import warnings
from pathlib import Path

import torch

CONFIG_DIR = Path(__file__).resolve().parent.parent / "demoprof_ros" / "core" / "model_configs"

# OpenAI CLIP (openai/CLIP model.py) parameter names, written out independently of open_clip.
OPENAI_TOP_KEYS = ("positional_embedding", "text_projection", "logit_scale", "token_embedding.weight",
                   "ln_final.weight", "ln_final.bias")
OPENAI_VISUAL_KEYS = ("class_embedding", "positional_embedding", "proj", "conv1.weight", "ln_pre.weight",
                      "ln_pre.bias", "ln_post.weight", "ln_post.bias")
OPENAI_BLOCK_KEYS = ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
                     "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
                     "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias")


def tiny_cfg(name: str = "tiny-64") -> dict:
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def tiny_model(name: str = "tiny-64", seed: int = 1, cfg: dict | None = None):
    """A tiny random open_clip CLIP in eval mode (seeded, without touching the global RNG)."""
    import open_clip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.model.CLIP(**copy.deepcopy(cfg or tiny_cfg(name))).eval()
        # Non-trivial norms and logit scale so a key loaded into the wrong place shows in the outputs.
        for key, value in model.state_dict().items():
            if key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
                value.uniform_(0.5, 1.5)
            elif key.endswith(".bias"):
                value.normal_(0, 0.02)
    return model


def openai_keys(vision_layers: int, text_layers: int) -> list[str]:
    """Every key of an OpenAI CLIP ViT state dict, from OpenAI's names."""
    keys = list(OPENAI_TOP_KEYS) + [f"visual.{k}" for k in OPENAI_VISUAL_KEYS]
    keys += [f"visual.transformer.resblocks.{i}.{k}" for i in range(vision_layers) for k in OPENAI_BLOCK_KEYS]
    keys += [f"transformer.resblocks.{i}.{k}" for i in range(text_layers) for k in OPENAI_BLOCK_KEYS]
    return keys


def openai_state_dict(model, half: bool = False) -> dict[str, torch.Tensor]:
    """The model's weights under OpenAI's key names (fp16 matrices like OpenAI's files when `half`)."""
    src = model.state_dict()
    if half:
        low = _lp_keys(model)
        src = {k: (v.half() if k in low else v) for k, v in src.items()}
    layers_v = len(model.visual.transformer.resblocks)
    layers_t = len(model.transformer.resblocks)
    return {k: src[k].clone() for k in openai_keys(layers_v, layers_t)}


def _lp_keys(model) -> set[str]:
    """Keys open_clip's convert_weights_to_lp turns to fp16 (the ones OpenAI stores in fp16)."""
    from open_clip.model import convert_weights_to_lp
    probe = copy.deepcopy(model)
    convert_weights_to_lp(probe, torch.float16)
    return {k for k, v in probe.state_dict().items() if v.dtype == torch.float16}


def half_rounded(model):
    """A copy whose fp16-stored weights are rounded through fp16, back in fp32: the reference for fp16 files."""
    from open_clip.model import convert_weights_to_lp
    ref = copy.deepcopy(model)
    convert_weights_to_lp(ref, torch.float16)
    return ref.float().eval()


# --- writers: each returns the path -----------------------------------------------------------------------

def write_open_clip(path: Path, model, fmt: str | None = None) -> Path:
    """open_clip state dict as .bin/.pt (torch.save) or .safetensors (format from the suffix)."""
    path = Path(path)
    fmt = fmt or path.suffix.lstrip(".")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return path


def write_openai_state_dict(path: Path, model, half: bool = False) -> Path:
    torch.save(openai_state_dict(model, half=half), path)
    return Path(path)


def write_openai_jit(path: Path, model, half: bool = True) -> Path:
    """A TorchScript archive in the form of OpenAI's ViT-B-16.pt (scripted, fp16 weights, input_resolution)."""
    from open_clip.model import convert_weights_to_lp
    jit_model = copy.deepcopy(model)
    mask = jit_model.attn_mask
    del jit_model._buffers["attn_mask"]   # OpenAI keeps the causal mask out of the state dict
    jit_model.attn_mask = mask
    jit_model.register_buffer("input_resolution", torch.tensor(model.visual.image_size[0]))
    if half:
        convert_weights_to_lp(jit_model, torch.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(jit_model).save(str(path))
    return Path(path)


def mim_state(model, layers: int = 1, vocab: int = 16, seed: int = 2) -> dict[str, torch.Tensor]:
    """FaRL-style MIM weights for the model's vision width (mask token, lm transformer, ln_lm, lm_head)."""
    width = model.visual.class_embedding.shape[0]
    block = {k.split("resblocks.0.", 1)[1]: v for k, v in model.state_dict().items()
             if k.startswith("visual.transformer.resblocks.0.")}
    gen = torch.Generator().manual_seed(seed)
    out = {"visual.mask_token": torch.randn(width, generator=gen)}
    for i in range(layers):
        for name, ref in block.items():
            out[f"visual.lm_transformer.resblocks.{i}.{name}"] = torch.randn(ref.shape, generator=gen)
    out["visual.ln_lm.weight"] = torch.ones(width)
    out["visual.ln_lm.bias"] = torch.zeros(width)
    out["visual.lm_head.weight"] = torch.randn(vocab, width, generator=gen)
    out["visual.lm_head.bias"] = torch.zeros(vocab)
    return out


def write_farl(path: Path, model, mim: dict | None = None, extra: dict | None = None,
               half: bool = False) -> Path:
    """FaRL's .pth layout: {"state_dict": OpenAI-CLIP keys + MIM keys}, tensors only."""
    sd = openai_state_dict(model, half=half)
    sd.update(mim if mim is not None else mim_state(model))
    sd.update(extra or {})
    torch.save({"state_dict": sd}, path)
    return Path(path)


def write_truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


def write_wrong_shape(path: Path, model, key: str = "visual.proj") -> Path:
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    rows, cols = sd[key].shape
    sd[key] = torch.zeros(rows, cols // 2)
    torch.save(sd, path)
    return Path(path)


WRONG_KEYS = {"visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
              "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
              "ln_final.weight": "text_model.final_layer_norm.weight"}


def write_wrong_keys(path: Path, model) -> Path:
    """Some keys renamed to Hugging Face names (a common mix-up)."""
    sd = {WRONG_KEYS.get(k, k): v.clone() for k, v in model.state_dict().items()}
    torch.save(sd, path)
    return Path(path)


def write_unsafe_pickle(path: Path, model) -> Path:
    """A checkpoint that also pickles a Python object (training args), as many training scripts do."""
    torch.save({"state_dict": model.state_dict(), "args": argparse.Namespace(lr=1e-5, epochs=2)}, path)
    return Path(path)


def trust_torchscript(monkeypatch, path: Path) -> Path:
    """Let this TorchScript stand-in load without opt-in, as OpenAI's published file does (by its sha256)."""
    from demoprof_ros.core import checkpoints
    monkeypatch.setitem(checkpoints.TRUSTED_TORCHSCRIPT, checkpoints.sha256_file(Path(path)), "test stand-in")
    return Path(path)
