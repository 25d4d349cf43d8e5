"""Zero-shot scorer: probabilities, prompt ensembling, the text cache, switched-off heads, joint top-k."""
import numpy as np
import pytest
import torch

from demoprof_ros.core.models import load_model
from demoprof_ros.core.scorer import ZeroShotScorer
from demoprof_ros.core.taxonomy import CLASSES, descriptions


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def _crops(n, seed=0, size=80):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size + 7 * i, 3), dtype=np.uint8) for i in range(n)]


@pytest.mark.parametrize("attributes", [("age", "gender", "race"), ("gender",), ("age", "race")])
def test_distributions_sum_to_one_and_off_heads_absent(tiny, attributes):
    scorer = ZeroShotScorer(tiny, attributes=attributes, joint_top_k=5)
    results = scorer.score(_crops(3))
    assert len(results) == 3
    n = int(np.prod([len(CLASSES[a]) for a in attributes]))
    for face in results:
        assert set(face.attributes) == set(attributes)
        for name, result in face.attributes.items():
            assert list(result.distribution) == list(CLASSES[name])
            assert sum(result.distribution.values()) == pytest.approx(1.0, abs=1e-5)
            assert result.top == max(result.distribution, key=result.distribution.get)
        assert len(face.joint) == min(5, n)
        assert all(set(c.classes) == set(attributes) for c in face.joint)
        probs = [c.probability for c in face.joint]
        assert probs == sorted(probs, reverse=True)
    joint = scorer.joint_probs(scorer.encode_images(_crops(2)))
    assert joint.shape == (2, n) and torch.allclose(joint.sum(-1), torch.ones(2), atol=1e-5)


def test_ensemble_is_mean_of_normalised_embeddings(tiny):
    scorer = ZeroShotScorer(tiny)
    texts = ["a photo of a man.", "a close-up photo of the face of a male person."]
    with torch.no_grad():
        each = tiny.model.encode_text(tiny.tokenizer(texts), normalize=True)
    expected = each.mean(0) / each.mean(0).norm()
    got = scorer.encode_ensembles([texts])[0]
    assert torch.allclose(got, expected, atol=1e-5)
    # Not the normalised embedding of either caption alone.
    assert not torch.allclose(got, each[0], atol=1e-3)


def test_text_embeddings_are_cached(tiny, monkeypatch):
    scorer = ZeroShotScorer(tiny)
    calls = {"n": 0}
    original = tiny.model.encode_text

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny.model, "encode_text", counting)
    scorer.score(_crops(2))
    first = calls["n"]
    assert first > 0
    scorer.score(_crops(4, seed=1))
    assert calls["n"] == first, "text prompts were re-encoded on the second frame"
    scorer.refresh_text()
    scorer.score(_crops(1))
    assert calls["n"] == 2 * first


def test_joint_top_k_agrees_with_attributes_on_constructed_case(tiny):
    """Class embeddings on orthogonal axes; a face at the sum of one class per attribute must win both ways."""
    scorer = ZeroShotScorer(tiny, joint_top_k=3)
    dim = int(tiny.model_cfg["embed_dim"])
    axes = {}
    offset = 0
    for name in ("age", "gender", "race"):
        axes[name] = torch.eye(dim)[offset:offset + len(CLASSES[name])]
        offset += len(CLASSES[name])
    assert offset <= dim
    scorer._heads = dict(axes)
    joint = []
    for d in scorer.descriptions:
        v = sum(axes[a][CLASSES[a].index(c)] for a, c in d.as_dict().items())
        joint.append(v / v.norm())
    scorer._joint_head = torch.stack(joint)
    target = {"age": "40-49", "gender": "Female", "race": "Indian"}
    face = sum(axes[a][CLASSES[a].index(c)] for a, c in target.items())
    result = scorer.score_embeddings((face / face.norm()).unsqueeze(0))[0]
    assert {a: r.top for a, r in result.attributes.items()} == target
    assert result.joint[0].classes == target
    assert result.joint[0].text == "40-49 year old Indian woman"


@pytest.mark.parametrize("bar,undetermined", [(0.0, False), (1.0, True)])
def test_confidence_bar(tiny, bar, undetermined):
    face = ZeroShotScorer(tiny, min_confidence=bar).score(_crops(1))[0]
    for result in face.attributes.values():
        assert result.undetermined is undetermined
        assert result.label == ("undetermined" if undetermined else result.top)


def test_batching_does_not_change_embeddings(tiny):
    crops = _crops(5)
    small = ZeroShotScorer(tiny, batch_size=2).encode_images(crops)
    large = ZeroShotScorer(tiny, batch_size=32).encode_images(crops)
    assert small.shape == (5, tiny.model_cfg["embed_dim"])
    assert torch.allclose(small, large, atol=1e-5)
    assert torch.allclose(small.norm(dim=-1), torch.ones(5), atol=1e-5)


def test_no_crops_and_no_attributes(tiny):
    assert ZeroShotScorer(tiny).score([]) == []
    off = ZeroShotScorer(tiny, attributes=())
    assert [f.attributes for f in off.score(_crops(2))] == [{}, {}]


@pytest.mark.parametrize("kwargs", [{"attributes": ("age", "height")}, {"min_confidence": 1.5},
                                    {"batch_size": 0}, {"attribute_scoring": "joint"}])
def test_bad_arguments(tiny, kwargs):
    with pytest.raises(ValueError):
        ZeroShotScorer(tiny, **kwargs)


def test_descriptions_follow_enabled_attributes(tiny):
    assert ZeroShotScorer(tiny, attributes=("gender", "age")).descriptions == descriptions(("age", "gender"))


@pytest.mark.parametrize("attributes", [("age", "gender", "race"), ("gender", "race"), ("age",)])
def test_description_scoring_is_the_marginal_of_the_joint_softmax(tiny, attributes):
    scorer = ZeroShotScorer(tiny, attributes=attributes, attribute_scoring="descriptions")
    embeddings = scorer.encode_images(_crops(3))
    joint = scorer.joint_probs(embeddings)
    probs = scorer.attribute_probs(embeddings)
    for a in attributes:
        expected = torch.stack([sum(joint[:, k] for k, d in enumerate(scorer.descriptions) if d.as_dict()[a] == c)
                                for c in CLASSES[a]], dim=1)
        assert torch.allclose(probs[a], expected, atol=1e-6)
        assert torch.allclose(probs[a].sum(-1), torch.ones(3), atol=1e-5)
    prompts = ZeroShotScorer(tiny, attributes=attributes).attribute_probs(embeddings)
    assert not all(torch.allclose(probs[a], prompts[a], atol=1e-4) for a in attributes)


def test_attribute_scoring_comes_from_the_checkpoint_unless_given(tiny):
    import dataclasses
    declared = dataclasses.replace(tiny, meta={**tiny.meta, "attribute_scoring": "descriptions"})
    assert ZeroShotScorer(tiny).attribute_scoring == "prompts"
    assert ZeroShotScorer(declared).attribute_scoring == "descriptions"
    assert ZeroShotScorer(declared, attribute_scoring="prompts").attribute_scoring == "prompts"
