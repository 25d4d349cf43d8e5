"""Retrieval: ranking, the on-disk embedding cache and its invalidation, precision@k, the CLI."""
import argparse
import os

import numpy as np
import pytest
import torch

from demoprof_ros.evaluation import retrieval as rt
from demoprof_ros.core.models import load_model
from demoprof_ros.core.scorer import ZeroShotScorer
from demoprof_ros.core.taxonomy import Description

from helpers_eval import write_images


class TextOnly:
    """A scorer whose text embedding of any query is a fixed vector."""

    def __init__(self, vector):
        self.vector = torch.as_tensor(vector, dtype=torch.float32)

    def encode_ensembles(self, ensembles):
        return self.vector[None].repeat(len(ensembles), 1)


def _unit(x):
    x = torch.as_tensor(x, dtype=torch.float32)
    return x / x.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("nearest", [0, 7, 19])
def test_constructed_nearest_image_comes_first(nearest):
    gen = torch.Generator().manual_seed(nearest)
    query = _unit(torch.randn(16, generator=gen))
    embeddings = _unit(torch.randn(20, 16, generator=gen))
    embeddings[nearest] = _unit(query + 0.05 * torch.randn(16, generator=gen))
    paths = [f"img_{i}.jpg" for i in range(20)]
    hits = rt.rank_images(TextOnly(query), "a photo of a 60-69 year old Indian man", paths, embeddings, k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].path.name == f"img_{nearest}.jpg"
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(float(embeddings[nearest] @ query), abs=1e-6)
    with pytest.raises(ValueError, match="empty query"):
        rt.rank_images(TextOnly(query), "  ", paths, embeddings)


def test_precision_at_k_on_a_constructed_ranking():
    descriptions = [Description("20-29", "Male", "East Asian"), Description("60-69", "Female", "White")]
    # Six images; description 0 ranks images 0,1,2 first, description 1 ranks 5,4,3 first.
    similarity = np.array([[6, 5, 4, 3, 2, 1], [1, 2, 3, 4, 5, 6]], dtype=float)
    labels = {"age": ["20-29", "20-29", None, "60-69", "60-69", "20-29"],
              "gender": ["Male", "Female", "Male", "Female", "Female", "Female"],
              "race": ["Asian", "Asian", "White", "White", "White", "Others"]}   # a coarse vocabulary
    owners = {"age": {c: c for c in labels["age"] if c} | {"60-69": "60-69"},
              "gender": {"Male": "Male", "Female": "Female"},
              "race": {"East Asian": "Asian", "Southeast Asian": "Asian", "White": "White",
                       "Latino_Hispanic": "Others", "Middle Eastern": "Others", "Black": "Black", "Indian": "Indian"}}
    out = rt.retrieval_precision_at_k(similarity, descriptions, labels, owners, k=3)
    first, second = out["per_description"]
    assert first["precision"]["age"] == pytest.approx(1.0)          # image 2's age unknown: not counted
    assert first["precision"]["gender"] == pytest.approx(2 / 3)
    assert first["precision"]["race"] == pytest.approx(2 / 3)        # 'Asian' covers 'East Asian'
    assert first["precision"]["full"] == pytest.approx(1 / 2)        # of images 0, 1 (all known): image 0
    assert second["precision"]["age"] == pytest.approx(2 / 3)
    assert second["precision"]["race"] == pytest.approx(2 / 3)
    assert second["chance"]["gender"] == pytest.approx(4 / 6)
    assert first["chance"]["full"] == pytest.approx(1 / 5)          # image 0 of the 5 fully labelled
    assert out["summary"]["gender"]["mean_precision"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["by_class"]["race"] == {"East Asian": pytest.approx(2 / 3), "White": pytest.approx(2 / 3)}
    assert rt.retrieval_precision_at_k(similarity, descriptions, labels, owners, k=50)["k"] == 6


# --- cache ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_scorer():
    return ZeroShotScorer(load_model("tiny"), batch_size=8)


class Counting:
    def __init__(self, scorer):
        self.scorer, self.encoded = scorer, 0

    def __getattr__(self, name):
        return getattr(self.scorer, name)

    def encode_images(self, crops):
        self.encoded += len(crops)
        return self.scorer.encode_images(crops)


def test_cache_reuses_and_refreshes_changed_images(tmp_path, tiny_scorer):
    paths = write_images(tmp_path / "imgs", 4)
    cache_root = tmp_path / "cache"
    fp = rt.model_fingerprint(tiny_scorer.loaded)
    counting = Counting(tiny_scorer)
    found, first, failures, stats = rt.embed_images(counting, paths, rt.EmbeddingCache(cache_root, fp), progress=False)
    assert stats == {"reused": 0, "computed": 4} and counting.encoded == 4 and not failures
    assert (cache_root / fp / "index.json").is_file()

    counting = Counting(tiny_scorer)
    _, again, _, stats = rt.embed_images(counting, paths, rt.EmbeddingCache(cache_root, fp), progress=False)
    assert stats == {"reused": 4, "computed": 0} and counting.encoded == 0
    assert torch.allclose(again, first)

    # Rewrite one image with other pixels (and a clearly different mtime): only it is encoded again.
    write_images(tmp_path / "other", 1, seed=99)
    os.replace(tmp_path / "other" / "img_00.jpg", paths[2])
    stat = paths[2].stat()
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    counting = Counting(tiny_scorer)
    _, refreshed, _, stats = rt.embed_images(counting, paths, rt.EmbeddingCache(cache_root, fp), progress=False)
    assert stats == {"reused": 3, "computed": 1} and counting.encoded == 1
    assert torch.allclose(refreshed[[0, 1, 3]], first[[0, 1, 3]])
    assert not torch.allclose(refreshed[2], first[2])
    assert torch.allclose(refreshed[2], tiny_scorer.encode_images([__import__("cv2").imread(str(paths[2]))])[0],
                          atol=1e-5)

    # A deleted image's embedding leaves the cache at the next save.
    paths[0].unlink()
    rt.embed_images(tiny_scorer, paths[1:], rt.EmbeddingCache(cache_root, fp), progress=False)
    cache = rt.EmbeddingCache(cache_root, fp)
    assert len(cache) == 3 and cache.get(paths[1]) is not None


def test_fingerprint_follows_the_weights(tiny_scorer):
    loaded = load_model("tiny")
    before = rt.model_fingerprint(loaded)
    assert rt.model_fingerprint(load_model("tiny")) == before
    with torch.no_grad():
        next(loaded.model.visual.parameters()).add_(0.01)
    assert rt.model_fingerprint(loaded) != before


def _cli(argv):
    parser = argparse.ArgumentParser()
    rt.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["retrieve", *argv])
    return args.func(args)


def test_cli_prints_cache_location_and_no_cache_writes_nothing(tmp_path, capsys):
    write_images(tmp_path / "imgs", 5)
    (tmp_path / "imgs" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    common = ["a photo of a 20-29 year old woman", "--images", str(tmp_path / "imgs"), "-k", "3", "--model", "tiny",
              "--no-progress"]
    code = _cli(common + ["--no-cache", "--cache-dir", str(tmp_path / "nocache")])
    out = capsys.readouterr()
    assert code == 1  # one unreadable image, reported
    assert "broken.jpg" in out.err and not (tmp_path / "nocache").exists()
    assert len(out.out.strip().splitlines()) == 3

    code = _cli(common + ["--cache-dir", str(tmp_path / "cache"), "--sheet", str(tmp_path / "sheet.png")])
    err = capsys.readouterr().err
    assert f"embedding cache: {tmp_path / 'cache'}" in err and "personal data" in err
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    assert list((tmp_path / "cache").glob("*/vectors.npy"))
    assert _cli(["x", "--images", str(tmp_path / "missing")]) == 2
