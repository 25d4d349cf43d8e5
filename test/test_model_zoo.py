"""`demoprof models fetch|convert|list` with the network replaced by local tiny files."""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from demoprof_ros.core import model_zoo
from demoprof_ros.core import models
from demoprof_ros.core.models import load_model

import helpers_checkpoints as ck


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="demoprof")
    model_zoo.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source():
    return ck.tiny_model("tiny-64", seed=7)


@pytest.fixture(scope="module")
def originals(tmp_path_factory, source):
    """Tiny stand-ins for the published downloads, in their published formats."""
    d = tmp_path_factory.mktemp("originals")
    pack = d / "buffalo_l.zip"
    with zipfile.ZipFile(pack, "w") as zf:
        zf.writestr("det_10g.onnx", b"fake scrfd onnx")
        zf.writestr("w600k_r50.onnx", b"fake recogniser")
    (d / "yunet.onnx").write_bytes(b"fake yunet onnx")
    return {"clip": ck.write_openai_jit(d / "ViT-B-16.pt", source),
            "farl": ck.write_farl(d / "FaRL-Base-Patch16-LAIONFace20M-ep64.pth", source),
            "insightface": pack, "yunet": d / "yunet.onnx"}


@pytest.fixture(autouse=True)
def tiny_stands_in(monkeypatch, originals):
    """The stand-ins are tiny-64, not ViT-B/16, and their TorchScript is not OpenAI's file: accept them as
    the real ones would be (test_hostile_checkpoints.py checks the refusals with the real rules)."""
    monkeypatch.setattr(model_zoo, "KIND_ARCHS", {kind: ("tiny-64",) for kind in model_zoo.CONVERTIBLE})
    ck.trust_torchscript(monkeypatch, originals["clip"])


@pytest.fixture
def fake_download(monkeypatch, originals):
    """Replace the network: each asset URL 'downloads' its local stand-in; records the URLs asked for."""
    by_url = {asset.url: originals[name] for name, asset in model_zoo.ASSETS.items()}
    asked = []

    def download(url, dest, timeout=60.0):
        asked.append(url)
        shutil.copyfile(by_url[url], dest)

    monkeypatch.setattr(model_zoo, "download", download)
    return asked


def trust_local(monkeypatch, originals, *names):
    """Make the published digests those of the stand-ins (the real ones cannot match tiny files)."""
    for name in names:
        asset = model_zoo.ASSETS[name]
        fields = {"sha256": sha256(originals[name])}
        if asset.member:
            fields["member_sha256"] = None
        monkeypatch.setitem(model_zoo.ASSETS, name, dataclasses.replace(asset, **fields))


# --- convert ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["clip", "farl"])
def test_convert_writes_safetensors_manifest_and_loads(tmp_path, source, originals, kind, capsys):
    assert run_cli(["models", "convert", str(originals[kind]), "--kind", kind, "--models-dir", str(tmp_path)]) == 0
    target = tmp_path / model_zoo.ASSETS[kind].target
    entry = json.loads((tmp_path / "manifest.json").read_text())["models"][kind]
    assert entry["file"] == target.name and entry["sha256"] == sha256(target)
    assert entry["source_sha256"] == sha256(originals[kind]) and entry["source_sha256_origin"] == "computed"
    assert entry["date"] and entry["source_url"] == str(originals[kind].resolve())
    assert entry["sha256"] in capsys.readouterr().out
    with safe_open(str(target), "pt") as f:
        mim_keys = [k for k in f.keys() if models.is_mim_key(k)]
    assert len(mim_keys) == (len(ck.mim_state(source)) if kind == "farl" else 0) == entry["mim_keys"]
    loaded = load_model(kind, models_dir=tmp_path)
    assert loaded.source == target and loaded.name == kind and loaded.meta["arch"] == "tiny-64"
    reference = ck.half_rounded(source) if kind == "clip" else source
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    tokens = loaded.tokenizer(["a photo of a face"])
    with torch.no_grad():
        assert torch.equal(loaded.model.encode_image(images), reference.encode_image(images))
        assert torch.equal(loaded.model.encode_text(tokens), reference.encode_text(tokens))
    assert set(loaded.mim_state) == set(mim_keys)


def test_convert_recognises_the_published_file(tmp_path, monkeypatch, originals):
    trust_local(monkeypatch, originals, "clip")
    entry = model_zoo.convert(originals["clip"], "clip", tmp_path)
    assert entry["source_sha256_origin"] == "published (matches)"


def test_convert_out_elsewhere_leaves_manifest_alone(tmp_path, originals):
    out = tmp_path / "elsewhere" / "my.safetensors"
    model_zoo.convert(originals["farl"], "farl", tmp_path / "models", out=out)
    assert out.is_file() and not (tmp_path / "models" / "manifest.json").exists()
    assert load_model(out).name == "farl"


@pytest.mark.parametrize("writer, fragment", [
    (lambda p, m: ck.write_truncated(ck.write_farl(p.with_name("full.pth"), m), p), "truncated or corrupt"),
    (lambda p, m: ck.write_wrong_keys(p, m), "unexpected keys"),
    (lambda p, m: ck.write_unsafe_pickle(p, m), "--allow-unsafe"),
])
def test_convert_bad_file_exits_2_with_message(tmp_path, source, capsys, writer, fragment):
    path = writer(tmp_path / "bad.pth", source)
    assert run_cli(["models", "convert", str(path), "--kind", "farl", "--models-dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and fragment in err
    assert not (tmp_path / "m" / "farl-b-16.safetensors").exists()


def test_convert_unsafe_with_opt_in(tmp_path, source):
    path = ck.write_unsafe_pickle(tmp_path / "u.pth", source)
    assert run_cli(["models", "convert", str(path), "--kind", "clip", "--allow-unsafe",
                    "--models-dir", str(tmp_path)]) == 0
    assert load_model("clip", models_dir=tmp_path).meta["arch"] == "tiny-64"  # now a safe safetensors


# --- fetch -----------------------------------------------------------------------------------------------

def test_fetch_sha256_mismatch_removes_download(tmp_path, fake_download, capsys):
    assert run_cli(["models", "fetch", "clip", "--models-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch for ViT-B-16.pt" in err and model_zoo.ASSETS["clip"].sha256 in err
    assert "download was removed" in err and "demoprof models fetch clip" in err
    assert fake_download == [model_zoo.ASSETS["clip"].url]
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind


@pytest.mark.parametrize("keep", [False, True])
def test_fetch_clip_verified_converted_recorded(tmp_path, monkeypatch, originals, fake_download, keep):
    trust_local(monkeypatch, originals, "clip")
    argv = ["models", "fetch", "clip", "--models-dir", str(tmp_path)] + (["--keep-download"] if keep else [])
    assert run_cli(argv) == 0
    entry = json.loads((tmp_path / "manifest.json").read_text())["models"]["clip"]
    assert entry["source_url"] == model_zoo.ASSETS["clip"].url and entry["source_file"] == "ViT-B-16.pt"
    assert entry["source_sha256_origin"] == "published (verified)"
    assert entry["sha256"] == sha256(tmp_path / "clip-vit-b-16.safetensors")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["clip-vit-b-16.safetensors", "manifest.json"] + (["ViT-B-16.pt"] if keep else []))
    assert load_model("clip", models_dir=tmp_path).source.name == "clip-vit-b-16.safetensors"


def test_fetch_farl_records_computed_sha(tmp_path, originals, fake_download, capsys):
    assert model_zoo.ASSETS["farl"].sha256 is None
    assert run_cli(["models", "fetch", "farl", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    digest = sha256(originals["farl"])
    assert "no published sha256" in out and digest in out
    entry = json.loads((tmp_path / "manifest.json").read_text())["models"]["farl"]
    assert entry["source_sha256"] == digest and entry["source_sha256_origin"].startswith("computed")
    assert load_model("auto", models_dir=tmp_path).name == "farl"


def test_fetch_detectors(tmp_path, monkeypatch, originals, fake_download):
    trust_local(monkeypatch, originals, "insightface", "yunet")
    assert run_cli(["models", "fetch", "insightface", "yunet", "--models-dir", str(tmp_path)]) == 0
    assert (tmp_path / "buffalo_l" / "det_10g.onnx").read_bytes() == b"fake scrfd onnx"
    assert (tmp_path / "face_detection_yunet_2023mar.onnx").read_bytes() == b"fake yunet onnx"
    manifest = json.loads((tmp_path / "manifest.json").read_text())["models"]
    assert manifest["insightface"]["sha256"] == sha256(tmp_path / "buffalo_l" / "det_10g.onnx")
    assert manifest["yunet"]["source_sha256_origin"] == "published (verified)"
    assert not list(tmp_path.glob("*.part"))


def test_fetch_zip_member_digest_checked(tmp_path, monkeypatch, originals, fake_download):
    asset = model_zoo.ASSETS["insightface"]
    monkeypatch.setitem(model_zoo.ASSETS, "insightface",
                        dataclasses.replace(asset, sha256=sha256(originals["insightface"])))
    with pytest.raises(model_zoo.FetchError, match="sha256 mismatch for det_10g.onnx"):
        model_zoo.fetch("insightface", tmp_path, log=lambda *_: None)
    assert not (tmp_path / "buffalo_l" / "det_10g.onnx").exists()


def test_fetch_all_reports_each_failure(tmp_path, fake_download, capsys):
    """Real published digests cannot match the stand-ins, except FaRL's (none published)."""
    assert run_cli(["models", "fetch", "all", "--models-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("sha256 mismatch") == 3
    assert sorted(json.loads((tmp_path / "manifest.json").read_text())["models"]) == ["farl"]


@pytest.mark.parametrize("argv", [[], ["all"], ["yunet", "yunet"]])
def test_fetch_names(tmp_path, monkeypatch, argv):
    fetched = []
    monkeypatch.setattr(model_zoo, "fetch", lambda name, *a, **k: fetched.append(name))
    assert run_cli(["models", "fetch", *argv, "--models-dir", str(tmp_path)]) == 0
    assert fetched == (["yunet"] if argv == ["yunet", "yunet"] else list(model_zoo.ASSETS))


def test_fetch_unknown_name_is_usage_error(tmp_path, capsys):
    assert run_cli(["models", "fetch", "vit-l", "--models-dir", str(tmp_path)]) == 2
    assert "unknown model 'vit-l'" in capsys.readouterr().err


def test_offline_download_gives_clear_error(tmp_path, monkeypatch, capsys):
    """The real download function against a closed local port: what an offline machine sees."""
    monkeypatch.setitem(model_zoo.ASSETS, "clip", dataclasses.replace(
        model_zoo.ASSETS["clip"], url="http://127.0.0.1:9/clip/models/ViT-B-16.pt"))
    assert run_cli(["models", "fetch", "clip", "--models-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "could not download http://127.0.0.1:9/clip/models/ViT-B-16.pt" in err and "offline" in err
    assert f"demoprof models convert ViT-B-16.pt --kind clip --models-dir {tmp_path}" in err
    assert list(tmp_path.iterdir()) == []


# --- list ------------------------------------------------------------------------------------------------

def test_list_shows_present_and_missing(tmp_path, source, originals, capsys):
    model_zoo.convert(originals["farl"], "farl", tmp_path)
    models.save_checkpoint(tmp_path / "my-run", source, ck.tiny_cfg("tiny-64"), {"name": "my-run"})
    assert run_cli(["models", "list", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines()[1:] if line.strip() and not line.strip().startswith("sha256")]
    lines = {line.split()[0]: line for line in rows}
    assert "present" in lines["farl"] and "MISSING" not in lines["farl"]
    for name in ("clip", "insightface", "yunet"):
        assert "MISSING" in lines[name] and f"demoprof models fetch {name}" in lines[name]
    assert "present" in lines["my-run"]
    assert sha256(tmp_path / "farl-b-16.safetensors") in out
    assert run_cli(["models", "list", "--json", "--models-dir", str(tmp_path)]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["farl"]["present"] and not rows["clip"]["present"]
    assert rows["clip"]["fix"] == "demoprof models fetch clip"


def test_list_empty_dir_does_not_create_it(tmp_path, capsys):
    missing = tmp_path / "nothing-here"
    assert run_cli(["models", "list", "--models-dir", str(missing)]) == 0
    assert not missing.exists() and capsys.readouterr().out.count("MISSING") == len(model_zoo.ASSETS)
