"""Model loading from real tiny checkpoint files in every supported form, and its error messages."""
from __future__ import annotations

import json
import logging
import os
import time

import pytest
import torch

from demoprof_ros.core import models
from demoprof_ros.core.models import LoadedModel, ModelLoadError, load_model, save_checkpoint
from demoprof_ros.core.transforms import OPENAI_MEAN, OPENAI_STD

import helpers_checkpoints as ck

TEXTS = ["a photo of a 20-29 year old East Asian woman", "a photo of a man", "x"]


@pytest.fixture(scope="module")
def source():
    return ck.tiny_model("tiny-64", seed=1)


def outputs(model, size: int = 64):
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = models.load_tiny("tiny").tokenizer(TEXTS)
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def assert_same_outputs(loaded: LoadedModel, reference) -> None:
    size = loaded.image_size
    for got, want in zip(outputs(loaded.model, size), outputs(reference, size)):
        assert torch.equal(got, want)


# Each writer: (file name, write(path, model), reference(model) the loaded model must reproduce exactly).
FORMATS = {
    "open_clip.bin": ("model.bin", lambda p, m: ck.write_open_clip(p, m), lambda m: m),
    "open_clip.pt": ("model.pt", lambda p, m: ck.write_open_clip(p, m), lambda m: m),
    "open_clip.safetensors": ("model.safetensors", lambda p, m: ck.write_open_clip(p, m), lambda m: m),
    "openai_keys.pt": ("openai.pt", lambda p, m: ck.write_openai_state_dict(p, m), lambda m: m),
    "openai_keys_fp16.pt": ("openai16.pt", lambda p, m: ck.write_openai_state_dict(p, m, half=True),
                            ck.half_rounded),
    "openai_torchscript": ("ViT-B-16.pt", lambda p, m: ck.write_openai_jit(p, m), ck.half_rounded),
    "farl.pth": ("FaRL.pth", lambda p, m: ck.write_farl(p, m), lambda m: m),
}


def test_openai_key_names_are_open_clip_layout(source):
    """OpenAI CLIP's own parameter names are exactly open_clip's CLIP state dict keys."""
    assert set(ck.openai_keys(2, 2)) == set(source.state_dict())


@pytest.mark.parametrize("form", list(FORMATS))
def test_each_format_loads_with_identical_outputs(tmp_path, monkeypatch, source, form):
    filename, write, reference = FORMATS[form]
    path = write(tmp_path / filename, source)
    if form == "openai_torchscript":  # TorchScript loads unasked only as OpenAI's file (by sha256)
        ck.trust_torchscript(monkeypatch, path)
    loaded = load_model(path)
    assert isinstance(loaded, LoadedModel)
    assert loaded.meta["arch"] == "tiny-64" and loaded.image_size == 64
    assert loaded.source == path and loaded.name == path.stem
    assert not loaded.model.training
    assert_same_outputs(loaded, reference(source))


@pytest.mark.parametrize("arch", ["tiny-64", "tiny-224"])
def test_architecture_inferred_from_shapes(tmp_path, arch):
    model = ck.tiny_model(arch, seed=3)
    loaded = load_model(ck.write_open_clip(tmp_path / "m.safetensors", model))
    assert loaded.meta["arch"] == arch
    assert loaded.image_size == ck.tiny_cfg(arch)["vision_cfg"]["image_size"]
    assert loaded.model_cfg == ck.tiny_cfg(arch)
    assert_same_outputs(loaded, model)


def test_loaded_model_fields(tmp_path, source):
    loaded = load_model(ck.write_open_clip(tmp_path / "m.safetensors", source))
    assert loaded.mean == OPENAI_MEAN and loaded.std == OPENAI_STD
    tokens = loaded.tokenizer(TEXTS)
    assert tokens.dtype == torch.long and tokens.shape == (len(TEXTS), 77)
    assert loaded.mim_state == {}


def test_farl_mim_keys_kept_in_mim_state(tmp_path, source):
    mim = ck.mim_state(source, layers=2, vocab=12)
    loaded = load_model(ck.write_farl(tmp_path / "farl.pth", source, mim=mim))
    assert set(loaded.mim_state) == set(mim)
    assert all(torch.equal(loaded.mim_state[k], v) for k, v in mim.items())
    assert not any(k in loaded.model.state_dict() for k in mim)
    assert models.describe_mim(loaded.mim_state) == {"layers": 2, "width": 64, "vocab_size": 12}
    assert_same_outputs(loaded, source)


@pytest.mark.parametrize("extra, message", [
    ({"visual.extra_head.weight": torch.zeros(2)}, "1 unexpected key (visual.extra_head.weight)"),
    ({"text_head.bias": torch.zeros(2)}, "1 unexpected key (text_head.bias)"),
])
def test_farl_non_mim_unexpected_keys_refused(tmp_path, source, extra, message):
    path = ck.write_farl(tmp_path / "farl.pth", source, extra=extra)
    with pytest.raises(ModelLoadError) as err:
        load_model(path)
    text = str(err.value)
    assert str(path) in text and message in text and "visual.lm_head.*" in text
    assert "demoprof models fetch farl" in text


@pytest.mark.parametrize("key, shape, want", [
    ("visual.mask_token", (32,), ("expected [64]", "got [32]")),
    ("visual.lm_head.weight", (16, 32), ("expected [16, 64]", "got [16, 32]")),
    ("visual.lm_transformer.resblocks.0.mlp.c_fc.weight", (128, 64), ("expected [256, 64]", "got [128, 64]")),
])
def test_farl_mim_wrong_shapes_refused(tmp_path, source, key, shape, want):
    mim = ck.mim_state(source)
    mim[key] = torch.zeros(shape)
    path = ck.write_farl(tmp_path / "farl.pth", source, mim=mim)
    with pytest.raises(ModelLoadError, match="wrong shape for FaRL MIM key") as err:
        load_model(path)
    text = str(err.value)
    assert str(path) in text and key in text and all(w in text for w in want), text


def test_farl_missing_clip_key_refused(tmp_path, source):
    path = ck.write_farl(tmp_path / "farl.pth", source)
    blob = torch.load(path, weights_only=True)
    del blob["state_dict"]["text_projection"]
    torch.save(blob, path)
    with pytest.raises(ModelLoadError, match=r"1 expected key missing \(text_projection\)") as err:
        load_model(path)
    assert str(path) in str(err.value)


# --- failures: one clear message naming the path, the expectation and the fix ------------------------------

def _truncated(kind):
    def write(path, model):
        src = FORMATS[kind][1](path.with_name("full_" + path.name), model)
        return ck.write_truncated(src, path)
    return write


FAILURES = {
    "missing": ("gone.pt", lambda p, m: p, ["model file not found", "demoprof models list"]),
    "empty": ("empty.pt", lambda p, m: (p.write_bytes(b""), p)[1], ["truncated or corrupt (empty file)",
                                                                     "demoprof models fetch"]),
    "garbage": ("junk.bin", lambda p, m: (p.write_bytes(b"not a checkpoint at all" * 10), p)[1],
                ["truncated or corrupt", "not a safetensors, PyTorch or TorchScript file"]),
    "truncated.safetensors": ("t.safetensors", _truncated("open_clip.safetensors"),
                              ["truncated or corrupt", "demoprof models fetch clip"]),
    "truncated.pt": ("t.pt", _truncated("open_clip.pt"), ["truncated or corrupt", "zip archive"]),
    "truncated_torchscript": ("ViT-B-16.pt", _truncated("openai_torchscript"), ["truncated or corrupt"]),
    "truncated_farl": ("f.pth", _truncated("farl.pth"), ["truncated or corrupt", "demoprof models fetch farl"]),
    "wrong_shape": ("s.pt", lambda p, m: ck.write_wrong_shape(p, m, "visual.proj"),
                    ["wrong shape for visual.proj: expected [64, 32] for tiny-64", "got [64, 16]",
                     "demoprof models fetch farl"]),
    "wrong_shape_text": ("s.pt", lambda p, m: ck.write_wrong_shape(p, m, "text_projection"),
                         ["wrong shape for text_projection: expected [64, 32]", "got [64, 16]"]),
    "wrong_keys": ("k.pt", lambda p, m: ck.write_wrong_keys(p, m),
                   ["3 expected keys missing (ln_final.weight, token_embedding.weight, visual.conv1.weight)",
                    "3 unexpected keys (text_model.", "vision_model.embeddings.patch_embedding.weight",
                    "demoprof models fetch farl"]),
    "unsafe_pickle": ("u.pth", lambda p, m: ck.write_unsafe_pickle(p, m),
                      ["holds Python objects besides tensors (argparse.Namespace)", "refused",
                       "--allow-unsafe", "allow_unsafe=True"]),
    "not_a_state_dict": ("l.pt", lambda p, m: (torch.save([torch.zeros(2)], p), p)[1],
                         ["holds a list, not a state dict"]),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_failures_raise_one_clear_error(tmp_path, source, case):
    filename, write, fragments = FAILURES[case]
    path = write(tmp_path / filename, source)
    with pytest.raises(ModelLoadError) as err:
        load_model(path)
    text = str(err.value)
    assert text.startswith(str(path) + ":"), text
    assert "expected" in text and "Fix:" in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    assert "\n" not in text


def test_unsafe_pickle_loads_with_explicit_opt_in(tmp_path, source, capture_log):
    path = ck.write_unsafe_pickle(tmp_path / "u.pth", source)
    caplog = capture_log("demoprof_ros.core.models", logging.WARNING)
    loaded = load_model(path, allow_unsafe=True)
    assert "full unpickling" in caplog.text
    assert_same_outputs(loaded, source)


@pytest.mark.parametrize("spec, fix", [
    ("clip", "demoprof models fetch clip"),
    ("farl", "demoprof models convert /path/to/FaRL-Base-Patch16-LAIONFace20M-ep64.pth --kind farl"),
])
def test_named_model_missing(tmp_path, spec, fix):
    with pytest.raises(ModelLoadError) as err:
        load_model(spec, models_dir=tmp_path)
    text = str(err.value)
    assert str(tmp_path) in text and fix in text and models.MODEL_FILES[spec][0] in text


@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": "fp8"}, "unsupported dtype 'fp8'"),
    ({"dtype": torch.int8}, "unsupported dtype torch.int8"),
    ({"device": "nonsense"}, "invalid device 'nonsense'"),
])
def test_bad_device_or_dtype(kwargs, message):
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(")):
        load_model("tiny", **kwargs)


def test_cuda_requested_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_model("tiny", device="cuda")


# --- dtype, tiny, auto, fine-tuned round trip ---------------------------------------------------------

@pytest.mark.parametrize("dtype, want", [("fp32", torch.float32), ("fp16", torch.float16),
                                         ("bf16", torch.bfloat16), (torch.bfloat16, torch.bfloat16)])
def test_dtype(tmp_path, source, dtype, want):
    loaded = load_model(ck.write_open_clip(tmp_path / "m.safetensors", source), dtype=dtype)
    assert {p.dtype for p in loaded.model.parameters()} == {want}
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = loaded.model.encode_image(images.to(want), normalize=True).float()
        ref = source.encode_image(images, normalize=True)
    tolerance = 0 if want == torch.float32 else 0.05
    assert got.dtype == torch.float32 and (got - ref).abs().max() <= tolerance


@pytest.mark.parametrize("spec, size", [("tiny", 64), ("tiny-64", 64), ("tiny-224", 224)])
def test_tiny_is_seeded_and_warns(spec, size, capture_log):
    caplog = capture_log("demoprof_ros.core.models", logging.WARNING)
    a, b = load_model(spec), load_model(spec)
    assert "UNTRAINED MODEL" in caplog.text and "mean NOTHING" in caplog.text
    assert a.image_size == size and a.meta["untrained"] is True and "UNTRAINED" in a.meta["warning"]
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    before = torch.random.get_rng_state()
    load_model(spec)
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG is left alone


def test_save_checkpoint_round_trip(tmp_path, source):
    mim = ck.mim_state(source)
    meta = {"name": "flyp-test", "base_model": "farl", "prompts": {"age": ["a photo of a {} year old"]}}
    out = save_checkpoint(tmp_path / "run1", source, ck.tiny_cfg("tiny-64"), meta, mim_state=mim)
    assert (out / "model.safetensors").is_file() and (out / "meta.json").is_file()
    stored = json.loads((out / "meta.json").read_text())
    assert stored["model_cfg"] == ck.tiny_cfg("tiny-64") and stored["base_model"] == "farl"
    loaded = load_model(out)
    assert loaded.name == "flyp-test" and loaded.source == out / "model.safetensors"
    assert loaded.meta["prompts"] == meta["prompts"] and loaded.meta["base_model"] == "farl"
    assert set(loaded.mim_state) == set(mim)
    assert_same_outputs(loaded, source)
    # The weights file alone carries its architecture too.
    assert load_model(out / "model.safetensors").model_cfg == ck.tiny_cfg("tiny-64")


def test_metadata_architecture_beats_shape_guess(tmp_path):
    """Head count is invisible in shapes: a fine-tuned model with 4 text heads must come back with 4."""
    cfg = ck.tiny_cfg("tiny-64")
    cfg["text_cfg"]["heads"] = 4
    model = ck.tiny_model(cfg=cfg, seed=5)
    out = save_checkpoint(tmp_path / "heads4", model, cfg, {})
    loaded = load_model(out)
    assert loaded.model_cfg["text_cfg"]["heads"] == 4 and loaded.meta["arch"] == "custom"
    assert_same_outputs(loaded, model)
    # Shape inference alone would pick tiny-64 (2 heads) and give different text embeddings.
    plain = load_model(ck.write_open_clip(tmp_path / "plain.safetensors", model))
    assert plain.meta["arch"] == "tiny-64"
    assert not torch.equal(outputs(plain.model)[1], outputs(model)[1])


@pytest.mark.parametrize("case, fragment", [
    ("no_weights", "no model.safetensors in this directory"),
    ("bad_meta", "meta.json: not valid JSON"),
])
def test_bad_finetuned_dir(tmp_path, source, case, fragment):
    out = save_checkpoint(tmp_path / "run", source, ck.tiny_cfg("tiny-64"), {})
    if case == "no_weights":
        (out / "model.safetensors").unlink()
    else:
        (out / "meta.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=fragment) as err:
        load_model(out)
    assert str(out) in str(err.value) and "Fix:" in str(err.value)


def _place(models_dir, what, model, monkeypatch=None):
    if what == "farl":
        ck.write_farl(models_dir / models.MODEL_FILES["farl"][1], model)
    elif what == "clip":
        ck.trust_torchscript(monkeypatch, ck.write_openai_jit(models_dir / "ViT-B-16.pt", model))
    elif what.startswith("finetuned"):
        out = save_checkpoint(models_dir / what, model, ck.tiny_cfg("tiny-64"), {"name": what})
        os.utime(out / "model.safetensors", (time.time() + int(what[-1]), time.time() + int(what[-1])))


@pytest.mark.parametrize("present, expected", [
    (["farl", "clip", "finetuned1"], "farl"),
    (["clip", "finetuned1"], "clip"),
    (["finetuned1", "finetuned2"], "finetuned2"),
    (["finetuned2", "finetuned1"], "finetuned2"),
    ([], "tiny-64"),
])
def test_auto_picks_best_present(tmp_path, monkeypatch, source, present, expected, capture_log):
    for what in present:
        _place(tmp_path, what, source, monkeypatch)
    caplog = capture_log("demoprof_ros.core.models", logging.WARNING)
    loaded = load_model("auto", models_dir=tmp_path)
    assert loaded.name == expected
    assert ("UNTRAINED" in caplog.text) == (expected == "tiny-64")
    if expected != "tiny-64":
        assert_same_outputs(loaded, ck.half_rounded(source) if expected == "clip" else source)
    assert bool(loaded.mim_state) == (expected == "farl")


def test_auto_does_not_hide_a_broken_file(tmp_path, monkeypatch, source):
    ck.write_truncated(ck.write_farl(tmp_path / "full.pth", source), tmp_path / models.MODEL_FILES["farl"][1])
    _place(tmp_path, "clip", source, monkeypatch)
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model("auto", models_dir=tmp_path)


def test_default_models_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("DEMOPROF_MODELS", str(tmp_path))
    assert models.default_models_dir() == tmp_path
    monkeypatch.delenv("DEMOPROF_MODELS")
    checkout = models.CONFIG_DIR.parents[2]
    assert models.default_models_dir() == checkout / "models"  # running from the source tree


def test_build_model_is_random_clip():
    cfg = ck.tiny_cfg("tiny-224")
    model = models.build_model(cfg)
    assert model.visual.image_size == (224, 224) and not model.training
    with pytest.raises(ModelLoadError, match="invalid model_cfg"):
        models.build_model({"embed_dim": 32})
