"""Hostile checkpoint files through every loading path: nothing runs code, overflows or gets installed unasked.

Classes (issue 13): TorchScript and pickles that run code at load, NaN / inf weights and outputs, foreign
architectures installed under CLIP's name, hostile metadata (meta.json / safetensors header).
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
import zipfile
from pathlib import Path
from typing import Tuple

import pytest
import torch

from demoprof_ros.core import checkpoints, model_zoo, models
from demoprof_ros.core.models import ModelLoadError, load_model, save_checkpoint

import helpers_checkpoints as ck

MARK = "PWNED: archive code ran at load"


class _Evil(torch.nn.Module):
    """A TorchScript module whose __setstate__ (run by torch.jit.load) has a visible side effect."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, bool]:
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]) -> None:
        print("PWNED: archive code ran at load")
        self.w = state[0]
        self.training = state[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def write_evil_torchscript(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(_Evil()).save(str(path))
    return Path(path)


class _Marker:
    """A pickle payload that creates a file when unpickled (what full unpickling allows)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture(scope="module")
def source():
    return ck.tiny_model("tiny-64", seed=11)


def test_the_evil_archive_bites(tmp_path, capfd):
    """The fixture really runs code under torch.jit.load, so the refusals below mean something."""
    path = write_evil_torchscript(tmp_path / "evil.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.load(str(path))
    assert MARK in capfd.readouterr().out


# --- TorchScript: every path refuses it unless trusted by sha256 or opted in ------------------------------

def _as_file(tmp_path, evil):
    return str(evil)


def _as_named_clip(tmp_path, evil):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "ViT-B-16.pt").write_bytes(evil.read_bytes())
    return ("clip", tmp_path / "m")


def _as_auto(tmp_path, evil):
    spec, mdir = _as_named_clip(tmp_path, evil)
    return ("auto", mdir)


def _as_finetuned_dir(tmp_path, evil):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.safetensors").write_bytes(evil.read_bytes())
    return str(out)


def _as_safetensors_name(tmp_path, evil):
    target = tmp_path / "weights.safetensors"
    target.write_bytes(evil.read_bytes())
    return str(target)


TORCHSCRIPT_PATHS = {"file": _as_file, "named_clip": _as_named_clip, "auto": _as_auto,
                     "finetuned_dir": _as_finetuned_dir, "safetensors_name": _as_safetensors_name}


@pytest.mark.parametrize("route", list(TORCHSCRIPT_PATHS))
def test_torchscript_refused_on_every_load_path(tmp_path, capfd, route):
    evil = write_evil_torchscript(tmp_path / "evil.pt")
    spec = TORCHSCRIPT_PATHS[route](tmp_path, evil)
    spec, mdir = spec if isinstance(spec, tuple) else (spec, None)
    with pytest.raises(ModelLoadError) as err:
        load_model(spec, models_dir=mdir)
    text = str(err.value)
    assert "TorchScript" in text or "not a safetensors file" in text, text
    assert "Fix:" in text
    assert MARK not in capfd.readouterr().out


def test_torchscript_refused_by_convert_and_nothing_installed(tmp_path, capfd):
    evil = write_evil_torchscript(tmp_path / "ViT-B-16.pt")
    parser = argparse.ArgumentParser(prog="demoprof")
    model_zoo.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "convert", str(evil), "--kind", "clip", "--models-dir", str(tmp_path / "m")])
    assert args.func(args) == 2
    captured = capfd.readouterr()
    assert MARK not in captured.out and "TorchScript is code that runs when loaded" in captured.err
    assert "--allow-unsafe" in captured.err and not (tmp_path / "m" / "clip-vit-b-16.safetensors").exists()


def test_torchscript_runs_only_with_opt_in(tmp_path, source, capfd, caplog):
    """allow_unsafe=True loads a real CLIP-shaped archive (and says that it runs code)."""
    path = ck.write_openai_jit(tmp_path / "mine.pt", source)
    with pytest.raises(ModelLoadError, match="not OpenAI's published ViT-B-16.pt"):
        load_model(path)
    loaded = load_model(path, allow_unsafe=True)
    assert loaded.meta["arch"] == "tiny-64" and "runs its code" in caplog.text


def test_openai_file_trusted_by_its_sha256(tmp_path, source, monkeypatch):
    path = ck.write_openai_jit(tmp_path / "ViT-B-16.pt", source)
    monkeypatch.setattr(checkpoints, "TRUSTED_TORCHSCRIPT", {checkpoints.sha256_file(path): "stand-in"})
    assert load_model(path).meta["arch"] == "tiny-64"
    assert model_zoo.ASSETS["clip"].sha256 == checkpoints.OPENAI_CLIP_SHA256  # one digest, one place


@pytest.mark.parametrize("members", [
    {"archive/data.pkl": b"x", "archive/code/__torch__.py": b"print('x')"},     # torch.save zip + code/
    {"weights/code/evil.py": b"import os", "weights/version": b"3"},          # code/ only
    {"a/constants.pkl": b"x", "a/data.pkl": b"x"},                            # constants, no code/
    {"x/code/__torch__.py": b"", "y/data.pkl": b"", "y/constants.pkl": b""},  # split over two folders
])
def test_zip_with_code_members_is_not_taken_for_torchscript(tmp_path, capfd, members):
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    assert checkpoints.sniff(path) == "zip-code"
    with pytest.raises(ModelLoadError, match="TorchScript code members .* but not a TorchScript archive"):
        load_model(path, allow_unsafe=True)


# --- pickles: weights_only=True always, whatever the environment -----------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("name", ["evil.pt", "ViT-B-16.pt"])
def test_force_no_weights_only_env_cannot_unpickle(tmp_path, monkeypatch, source, legacy, name):
    marker = tmp_path / "marker"
    path = tmp_path / "m" / name
    path.parent.mkdir()
    torch.save({"state_dict": source.state_dict(), "x": _Marker(str(marker))}, path,
               _use_new_zipfile_serialization=not legacy)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    for spec, mdir in ((path, None), ("clip", path.parent), ("auto", path.parent)):
        if spec != path and name != "ViT-B-16.pt":
            continue
        with pytest.raises(ModelLoadError, match="holds Python objects besides tensors"):
            load_model(spec, models_dir=mdir)
    with pytest.raises(ModelLoadError):
        model_zoo.convert(path, "clip", tmp_path / "zoo")
    assert not marker.exists()


# --- NaN / inf ---------------------------------------------------------------------------------------------

def _poison(model, key, value):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd[key].view(-1)[0] = value
    return sd


@pytest.mark.parametrize("key, value", [("visual.proj", float("nan")), ("text_projection", float("inf")),
                                        ("visual.conv1.weight", float("-inf")), ("logit_scale", float("nan"))])
def test_non_finite_weights_refused(tmp_path, source, key, value):
    from safetensors.torch import save_file
    path = tmp_path / "m.safetensors"
    save_file(_poison(source, key, value), str(path))
    with pytest.raises(ModelLoadError, match=f"NaN or infinite values \\({key}\\)"):
        load_model(path)


@pytest.mark.parametrize("change", [{"logit_scale": 1e5}, {"meta_std": [1e-30, 1e-30, 1e-30]},
                                    {"huge_weights": 3e38}])
def test_finite_weights_that_overflow_refused_by_the_probe(tmp_path, source, change):
    sd = {k: v.clone() for k, v in source.state_dict().items()}
    meta = {}
    if "logit_scale" in change:
        sd["logit_scale"].fill_(change["logit_scale"])
    if "huge_weights" in change:
        sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].fill_(change["huge_weights"])
    if "meta_std" in change:
        meta["std"] = change["meta_std"]
    model = ck.tiny_model(seed=11)
    model.load_state_dict(sd)
    out = save_checkpoint(tmp_path / "run", model, ck.tiny_cfg(), meta)
    with pytest.raises(ModelLoadError, match="NaN or infinite outputs on a probe image"):
        load_model(out)


# --- architecture: convert installs ViT-B/16 only ----------------------------------------------------------

@pytest.mark.parametrize("kind", ["clip", "farl"])
def test_convert_refuses_a_small_model_as_clip_or_farl(tmp_path, source, capsys, kind):
    path = ck.write_open_clip(tmp_path / "tiny.safetensors", source)
    parser = argparse.ArgumentParser(prog="demoprof")
    model_zoo.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "convert", str(path), "--kind", kind, "--models-dir", str(tmp_path / "m")])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "a tiny-64 model" in err and "ViT-B-16-quickgelu" in err and "nothing was installed" in err
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


# --- metadata: schema-checked before anything is built ---------------------------------------------------

def _cfg(**vision):
    cfg = ck.tiny_cfg()
    cfg["vision_cfg"].update(vision)
    return cfg


META_CASES = {
    "layers_20000": ({"model_cfg": _cfg(layers=20000)}, "vision_cfg/layers"),
    "width_negative": ({"model_cfg": _cfg(width=-64)}, "vision_cfg/width"),
    "hf_model_name": ({"model_cfg": {**ck.tiny_cfg(), "text_cfg": {**ck.tiny_cfg()["text_cfg"],
                                                                  "hf_model_name": "bert-base"}}},
                      "text_cfg"),
    "timm_model": ({"model_cfg": _cfg(timm_model_name="vit_huge", timm_model_pretrained=True)}, "vision_cfg"),
    "cfg_not_object": ({"model_cfg": "ViT-B-16"}, "model_cfg"),
    "cfg_missing_text": ({"model_cfg": {k: v for k, v in ck.tiny_cfg().items() if k != "text_cfg"}}, "text_cfg"),
    "mean_two_values": ({"mean": [0.5, 0.5]}, "mean"),
    "mean_strings": ({"mean": ["a", "b", "c"]}, "mean/"),
    "std_zero": ({"std": [0.0, 0.2, 0.2]}, "std/"),
    "std_negative": ({"std": [-1.0, 0.2, 0.2]}, "std/"),
    "name_10k": ({"name": "n" * 10000}, "name"),
    "prompts_list": ({"prompts": ["a photo"]}, "prompts"),
    "attribute_scoring_unknown": ({"attribute_scoring": "eval(1)"}, "attribute_scoring"),
}


@pytest.mark.parametrize("case", list(META_CASES))
def test_hostile_meta_json_refused_fast(tmp_path, source, case):
    patch, where = META_CASES[case]
    out = save_checkpoint(tmp_path / "run", source, ck.tiny_cfg(), {})
    meta = json.loads((out / "meta.json").read_text())
    meta.update(patch)
    (out / "meta.json").write_text(json.dumps(meta))
    start = time.monotonic()
    with pytest.raises(ModelLoadError) as err:
        load_model(out)
    assert time.monotonic() - start < 5.0  # the 20,000-layer config used to cost 20 s before refusal
    text = str(err.value)
    assert "invalid checkpoint metadata" in text and where in text and "Fix:" in text, text
    assert len(text) < 1200


@pytest.mark.parametrize("raw, fragment", [
    ('{"std": [NaN, 0.2, 0.2]}', "NaN is not a JSON number"),
    ('{"mean": [Infinity, 0, 0]}', "Infinity is not a JSON number"),
    ('[1, 2, 3]', "expected a JSON object"),
    ('{"name": "x"', "not valid JSON"),
])
def test_meta_json_not_json_refused(tmp_path, source, raw, fragment):
    out = save_checkpoint(tmp_path / "run", source, ck.tiny_cfg(), {})
    (out / "meta.json").write_text(raw)
    with pytest.raises(ModelLoadError, match=fragment):
        load_model(out)


def test_huge_meta_json_refused_without_parsing(tmp_path, source):
    out = save_checkpoint(tmp_path / "run", source, ck.tiny_cfg(), {})
    with open(out / "meta.json", "wb") as f:
        f.truncate(64 * 1024 * 1024)
    with pytest.raises(ModelLoadError, match="too big for checkpoint metadata"):
        load_model(out)


def test_hostile_safetensors_header_metadata_refused(tmp_path, source):
    """The weights file alone carries a model_cfg too: the same schema applies there."""
    path = models.write_safetensors(tmp_path / "w.safetensors", source.state_dict(),
                                    {"name": "x", "model_cfg": _cfg(layers=20000)})
    with pytest.raises(ModelLoadError, match="invalid checkpoint metadata .*vision_cfg/layers"):
        load_model(path)


def test_build_model_checks_the_schema_first():
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="invalid model_cfg .*layers"):
        models.build_model(_cfg(layers=20000))
    assert time.monotonic() - start < 2.0
