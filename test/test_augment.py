"""training/augment.py: the `faces` policy is seeded, keeps shapes, really changes framing, and is wired in."""
from __future__ import annotations

import pytest
import torch

from demoprof_ros.training.augment import AUGMENTATIONS, FaceAugment, make_augment
from demoprof_ros.training.config import TrainConfig, TrainConfigError


def _faces(n: int = 6, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    x[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] += 3.0  # a bright "face" in the middle
    return x


def test_same_seed_same_batch_other_seed_other_batch():
    x = _faces()
    a, b, c = FaceAugment()(x, (0, 1, 2, 0)), FaceAugment()(x, (0, 1, 2, 0)), FaceAugment()(x, (0, 1, 3, 0))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("zoom,bigger", [((0.5, 0.5), False), ((1.5, 1.5), True)])
def test_zoom_changes_the_size_of_the_face(zoom, bigger):
    x = _faces(1)
    aug = FaceAugment(zoom=zoom, shift=0.0, brightness=0.0, contrast=0.0)
    bright = lambda t: int((t > 1.5).sum())  # noqa: E731  pixels of the bright square
    assert (bright(aug(x, (0,))) > bright(x)) == bigger


def test_identity_settings_only_mirror():
    x = _faces(8)
    out = FaceAugment(zoom=(1.0, 1.0), shift=0.0, brightness=0.0, contrast=0.0)(x, (5,))
    for i in range(len(x)):
        assert torch.allclose(out[i], x[i], atol=1e-5) or torch.allclose(out[i], x[i].flip(-1), atol=1e-5)
    flipped = sum(not torch.allclose(out[i], x[i], atol=1e-5) for i in range(len(x)))
    assert 0 < flipped < len(x)


def test_policies_and_config_validation():
    assert make_augment("none") is None and isinstance(make_augment("faces"), FaceAugment)
    assert AUGMENTATIONS == ("none", "faces")
    with pytest.raises(ValueError, match="augment='crop'"):
        make_augment("crop")
    with pytest.raises(TrainConfigError, match="augment='crop'"):
        TrainConfig(train=["a.csv"], augment="crop").validate()
    with pytest.raises(TrainConfigError, match="mim_target codebook"):
        TrainConfig(train=["a.csv"], augment="faces", mim=True, mim_target="codebook").validate()
    TrainConfig(train=["a.csv"], augment="faces", mim=True, mim_target="pixels").validate()


def test_train_step_applies_the_augmentation(monkeypatch):
    """The loop body hands the normalised batch and the step's seed to the policy."""
    import open_clip
    from demoprof_ros.core.models import build_model, model_config
    from demoprof_ros.training.loop import FineTuneModule, StepParts, train_step
    from demoprof_ros.training.losses import ContrastiveLoss
    from demoprof_ros.training.optim import make_adamw, param_groups

    torch.manual_seed(0)
    clip = build_model(model_config("tiny-64"))
    module = FineTuneModule(clip)
    seen = []

    def spy(x, seed):
        seen.append((tuple(x.shape), x.dtype, seed))
        return x.flip(-1)

    parts = StepParts(module, make_adamw(param_groups(module, 0.1), 1e-3), torch.amp.GradScaler("cpu", enabled=False),
                      ContrastiveLoss(), (0.5,) * 3, (0.25,) * 3, torch.device("cpu"), augment=spy)
    images = torch.randint(0, 255, (4, 64, 64, 3), dtype=torch.uint8)  # N x H x W x 3, as the loader gives
    tokens = open_clip.get_tokenizer("ViT-B-16-quickgelu")(["a face"] * 4)
    loss = train_step(parts, images, tokens, torch.arange(4), (3, 1, 7, 0))
    assert torch.isfinite(loss).all()
    assert seen == [((4, 3, 64, 64), torch.float32, (3, 1, 7, 0))]
