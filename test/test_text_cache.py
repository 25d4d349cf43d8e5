"""The on-disk caption-embedding cache (core/text_cache.py): exact reuse, keys, corruption, never face data."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch

from demoprof_ros.core import text_cache as tc
from demoprof_ros.core.models import load_model
from demoprof_ros.core.prompts import PromptSet
from demoprof_ros.core.scorer import ZeroShotScorer


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def _scorer(loaded, root, **kwargs):
    return ZeroShotScorer(loaded, text_cache=tc.TextEmbeddingCache.for_model(loaded, root), **kwargs)


def _heads(scorer):
    return {**scorer.heads, "joint": scorer.joint_head}


def test_second_scorer_reuses_exactly_what_the_first_computed(tiny, tmp_path):
    first = _scorer(tiny, tmp_path)
    computed = _heads(first)
    assert (first.text_cache.hits, first.text_cache.misses) == (0, 4)
    second = _scorer(tiny, tmp_path)
    reused = _heads(second)
    assert (second.text_cache.hits, second.text_cache.misses) == (4, 0)
    uncached = _heads(ZeroShotScorer(tiny))
    for name in computed:
        assert torch.equal(reused[name], computed[name]) and torch.equal(uncached[name], computed[name]), name


def test_scoring_faces_writes_nothing(tiny, tmp_path):
    scorer = _scorer(tiny, tmp_path)
    _heads(scorer)
    before = sorted(os.listdir(tmp_path))
    scorer.score([np.full((80, 80, 3), 128, np.uint8)] * 3)
    assert sorted(os.listdir(tmp_path)) == before


def test_key_follows_prompts_attributes_and_dtype(tiny, tmp_path):
    _heads(_scorer(tiny, tmp_path))
    other_prompts = PromptSet(templates={a: ["a portrait showing {}."] for a in ("age", "gender", "race")})
    scorer = _scorer(tiny, tmp_path, prompts=other_prompts)
    _ = scorer.heads
    assert (scorer.text_cache.hits, scorer.text_cache.misses) == (0, 3)  # other texts: new entries
    _ = scorer.joint_head
    assert scorer.text_cache.hits == 1  # the descriptions did not change: the same entry
    half = load_model("tiny", dtype="bf16")
    assert tc.model_key(half, tmp_path) != tc.model_key(tiny, tmp_path)


@pytest.mark.parametrize("damage", [b"", b"not safetensors at all", "wrong-shape"])
def test_corrupt_entry_is_ignored_and_rebuilt(tiny, tmp_path, damage, caplog):
    scorer = _scorer(tiny, tmp_path, attributes=["gender"], joint_top_k=0)
    good = scorer.heads["gender"].clone()
    (entry,) = tmp_path.glob("*.safetensors")
    if damage == "wrong-shape":
        from safetensors.torch import save_file
        save_file({"embeddings": torch.zeros(5, good.shape[1])}, str(entry))
    else:
        entry.write_bytes(damage)
    again = _scorer(tiny, tmp_path, attributes=["gender"], joint_top_k=0)
    assert torch.equal(again.heads["gender"], good) and again.text_cache.hits == 0
    third = _scorer(tiny, tmp_path, attributes=["gender"], joint_top_k=0)
    assert torch.equal(third.heads["gender"], good) and third.text_cache.hits == 1  # rewritten


def test_refresh_text_drops_the_cache(tiny, tmp_path):
    scorer = _scorer(tiny, tmp_path)
    scorer.refresh_text()  # the text tower may have changed: the weights no longer match the key
    assert scorer.text_cache is None


def test_unwritable_cache_only_costs_the_speed_up(tiny, tmp_path, caplog):
    (tmp_path / "file").write_text("x")
    scorer = _scorer(tiny, tmp_path / "file" / "sub")
    assert scorer.heads["age"].shape[0] == 9
    assert "continuing without it" in caplog.text


def test_file_hash_is_remembered_by_size_and_mtime(tmp_path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"abc" * 1000)
    true = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert tc.file_sha256(weights, tmp_path / "cache") == true
    index = tmp_path / "cache" / "file_hashes.json"
    data = json.loads(index.read_text())
    data[str(weights.resolve())]["sha256"] = "remembered"
    index.write_text(json.dumps(data))
    assert tc.file_sha256(weights, tmp_path / "cache") == "remembered"  # not re-hashed
    weights.write_bytes(b"abd" * 1000)  # same size, new mtime
    os.utime(weights, ns=(1, 1))
    assert tc.file_sha256(weights, tmp_path / "cache") == hashlib.sha256(b"abd" * 1000).hexdigest()
    index.write_text("{corrupt")
    assert tc.file_sha256(weights, tmp_path / "cache") == hashlib.sha256(b"abd" * 1000).hexdigest()


def test_default_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DEMOPROF_CACHE", str(tmp_path))
    assert tc.default_text_cache_dir() == tmp_path / "text"
    monkeypatch.delenv("DEMOPROF_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tc.default_text_cache_dir() == tmp_path / "xdg" / "demoprof" / "text"
