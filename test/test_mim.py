"""FaRL-style MIM: block masks, the mask-token encoder path, masked-only losses, k-means targets, FaRL reuse."""
import json

import pytest
import torch
from torch import nn

from demoprof_ros.training import mim
from demoprof_ros.core.models import build_model, load_model, model_config, save_checkpoint
from helpers_train import one_thread  # noqa: F401  (autouse fixture)


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return build_model(model_config("tiny-64"))


def _images(n, seed=0, size=64):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --- masks ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("grid,ratio", [((4, 4), 0.4), ((14, 14), 0.4), ((7, 9), 0.25), ((14, 14), 0.6)])
def test_block_masks_hit_the_exact_ratio_and_are_seeded(grid, ratio):
    masks = mim.block_masks(6, grid, ratio, seed=(1, 2, 3))
    assert masks.shape == (6, grid[0] * grid[1]) and masks.dtype == torch.bool
    assert (masks.sum(1) == round(ratio * grid[0] * grid[1])).all()
    assert torch.equal(masks, mim.block_masks(6, grid, ratio, seed=(1, 2, 3)))
    assert not torch.equal(masks, mim.block_masks(6, grid, ratio, seed=(1, 2, 4)))


def test_block_masks_are_blockwise_not_scattered():
    """Masked patches mostly touch another masked patch; for uniform random masks far fewer do."""
    def clustered(masks, h=14, w=14):
        m = masks.view(-1, h, w).float()
        padded = nn.functional.pad(m, (1, 1, 1, 1))
        neighbours = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
        return ((neighbours >= 2) & (m > 0)).sum() / m.sum()

    block = mim.block_masks(32, (14, 14), 0.4, seed=0)
    g = torch.Generator().manual_seed(0)
    scattered = torch.stack([torch.randperm(196, generator=g) < 78 for _ in range(32)])
    assert clustered(block) > 0.75
    assert clustered(block) > clustered(scattered) + 0.3


def test_bad_ratio_is_refused():
    with pytest.raises(mim.MIMError, match="mask ratio"):
        mim.block_masks(1, (4, 4), 1.0, seed=0)


# --- encoder path ----------------------------------------------------------------------------------------------

def test_unmasked_path_equals_open_clip_and_mask_leaves_the_clean_copy_alone(clip):
    visual = clip.visual.eval()
    x = _images(3)
    with torch.no_grad():
        reference = visual(x)
        clean, hidden = mim.encode_with_mim(visual, x)
        assert hidden is None and torch.allclose(clean, reference, atol=1e-5)
        head = mim.MIMHead.for_visual(visual, 8)
        mask = mim.block_masks(3, mim.grid_size(visual), 0.4, seed=0)
        clean2, masked = mim.encode_with_mim(visual, x, mask, head.mask_token)
    assert torch.allclose(clean2, reference, atol=1e-5)
    assert masked.shape == (3, 1 + 16, 64)
    assert head(masked, mask).shape == (int(mask.sum()), 8)


@pytest.mark.parametrize("target", ["codebook", "pixels"])
def test_mim_gradients_reach_mask_token_and_patch_embedding(clip, target):
    model = build_model(model_config("tiny-64")).train()
    visual = model.visual
    x = _images(4, seed=1)
    out_dim = 16 if target == "codebook" else 16 * 16 * 3
    head = mim.MIMHead.for_visual(visual, out_dim)
    mask = mim.block_masks(4, mim.grid_size(visual), 0.4, seed=0)
    if target == "codebook":
        targets = torch.randint(0, 16, (4, 16), generator=torch.Generator().manual_seed(0))
    else:
        targets = mim.pixel_targets(x, 16)
    _, hidden = mim.encode_with_mim(visual, x, mask, head.mask_token)
    mim.mim_loss(head(hidden, mask), targets, mask).backward()
    assert head.mask_token.grad is not None and head.mask_token.grad.abs().sum() > 0
    assert visual.conv1.weight.grad is not None and visual.conv1.weight.grad.abs().sum() > 0
    assert head.lm_head.weight.grad.abs().sum() > 0


def test_training_step_under_bf16_autocast(clip):
    """The GPU path's mixed precision, exercised on the CPU: dtypes line up and the losses stay finite."""
    from demoprof_ros.training.losses import ContrastiveLoss
    from demoprof_ros.core.models import load_model
    from demoprof_ros.training.loop import FineTuneModule

    loaded = load_model("tiny")
    module = FineTuneModule(loaded.model.train(), mim.MIMHead.for_visual(loaded.model.visual, 16))
    x = _images(4, seed=2)
    mask = mim.block_masks(4, mim.grid_size(loaded.model.visual), 0.4, seed=0)
    tokens = loaded.tokenizer(["a photo of a man."] * 2 + ["a photo of a woman."] * 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image, text, scale, predictions = module(x, tokens, mask)
    assert image.dtype == torch.bfloat16 and predictions.shape == (int(mask.sum()), 16)
    targets = torch.randint(0, 16, (4, 16), generator=torch.Generator().manual_seed(0))
    loss = ContrastiveLoss()(image, text, scale) + mim.mim_loss(predictions, targets, mask)
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert module.mim_head.mask_token.grad is not None and module.mim_head.mask_token.grad.dtype == torch.float32


@pytest.mark.parametrize("kind", ["tokens", "pixels"])
def test_loss_reads_only_masked_positions(kind):
    g = torch.Generator().manual_seed(0)
    mask = mim.block_masks(3, (4, 4), 0.4, seed=5)
    m = int(mask.sum())
    if kind == "tokens":
        predictions, targets = torch.randn(m, 10, generator=g), torch.randint(0, 10, (3, 16), generator=g)
        other = targets.clone()
        other[~mask] = (other[~mask] + 3) % 10
        changed = targets.clone()
        changed[mask] = (changed[mask] + 3) % 10
    else:
        predictions, targets = torch.randn(m, 12, generator=g), torch.randn(3, 16, 12, generator=g)
        other = targets.clone()
        other[~mask] += 5.0
        changed = targets.clone()
        changed[mask] += 5.0
    base = mim.mim_loss(predictions, targets, mask)
    assert mim.mim_loss(predictions, other, mask).item() == base.item()
    assert mim.mim_loss(predictions, changed, mask).item() != pytest.approx(base.item())


def test_patchify_follows_conv1_order_and_pixel_targets_are_normalised():
    # Each 16x16 patch filled with its own row-major index.
    index = torch.arange(16.0).view(1, 1, 4, 4)
    image = index.repeat_interleave(16, 2).repeat_interleave(16, 3).expand(2, 3, 64, 64)
    patches = mim.patchify(image, 16)
    assert patches.shape == (2, 16, 16 * 16 * 3)
    assert torch.equal(patches[0, :, 0], torch.arange(16.0)) and (patches.std(-1) == 0).all()
    targets = mim.pixel_targets(_images(2), 16)
    assert torch.allclose(targets.mean(-1), torch.zeros(2, 16), atol=1e-5)
    assert torch.allclose(targets.std(-1), torch.ones(2, 16), atol=1e-3)


def test_non_vit_encoder_is_refused():
    with pytest.raises(mim.MIMError, match="ViT"):
        mim.check_vit(nn.Linear(3, 3))


# --- k-means codebook -----------------------------------------------------------------------------------------

def test_kmeans_recovers_separated_clusters_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1)
    points = centres.repeat_interleave(50, 0) + 0.01 * torch.randn(200, 8, generator=g)
    found = mim.kmeans(points, 4, iters=10, seed=0)
    assert (found @ centres.T).max(dim=0).values.min() > 0.99  # every true centre found
    assert torch.equal(found, mim.kmeans(points, 4, iters=10, seed=0))
    with pytest.raises(mim.MIMError, match="at least k"):
        mim.kmeans(points[:3], 4)


def test_codebook_targets_are_deterministic_and_cached(clip, tmp_path, monkeypatch):
    batches = lambda: iter([_images(8, seed=3), _images(8, seed=4)])  # noqa: E731
    kwargs = dict(k=12, data_fingerprint="abc", iters=5, max_vectors=200)
    first, path = mim.CodebookTargets.build(clip.visual, batches, cache_dir=tmp_path / "a", seed=0, **kwargs)
    second, _ = mim.CodebookTargets.build(clip.visual, batches, cache_dir=tmp_path / "b", seed=0, **kwargs)
    assert path.is_file() and first.size == 12
    assert torch.equal(first.centroids, second.centroids)
    x = _images(4, seed=9)
    tokens = first(x)
    assert tokens.shape == (4, 16) and tokens.dtype == torch.long and torch.equal(tokens, second(x))
    other, _ = mim.CodebookTargets.build(clip.visual, batches, cache_dir=tmp_path / "a", seed=1, **kwargs)
    assert not torch.equal(other.centroids, first.centroids)

    # Built once: a second build with the same key reads the file instead of clustering again.
    monkeypatch.setattr(mim, "kmeans", lambda *a, **k: pytest.fail("codebook rebuilt despite the cache"))
    cached, again = mim.CodebookTargets.build(clip.visual, batches, cache_dir=tmp_path / "a", seed=0, **kwargs)
    assert again == path and torch.equal(cached.centroids, first.centroids)
    # Another data fingerprint is another key.
    with pytest.raises(mim.MIMError, match="missing"):
        mim.CodebookTargets.build(clip.visual, batches, cache_dir=tmp_path / "a", seed=0, build=False,
                                  **{**kwargs, "data_fingerprint": "other"})


def test_teacher_is_a_frozen_copy(clip, tmp_path):
    model = build_model(model_config("tiny-64"))
    targets, _ = mim.CodebookTargets.build(model.visual, lambda: iter([_images(8)]), k=8, cache_dir=tmp_path,
                                           data_fingerprint="x", iters=3)
    before = targets(_images(2, seed=1))
    with torch.no_grad():
        model.visual.conv1.weight.add_(1.0)  # training the student must not move the targets
    assert torch.equal(before, targets(_images(2, seed=1)))
    assert not any(p.requires_grad for p in targets.teacher.parameters())


# --- FaRL MIM weights --------------------------------------------------------------------------------------------

def test_farl_mim_weights_are_reused_where_shapes_fit(clip):
    released = mim.MIMHead.for_visual(clip.visual, 8192, layers=2)
    state = {f"visual.{k}": v for k, v in released.state_dict().items()}
    assert mim.farl_head_layers(state) == 2
    head = mim.MIMHead.for_visual(clip.visual, 32, layers=2)
    reused, skipped = mim.load_mim_state(head, state)
    assert "mask_token" in reused and "ln_lm.weight" in reused
    assert any(name.startswith("lm_transformer.resblocks.1.") for name in reused)
    assert sorted(s.split(":")[0] for s in skipped) == ["visual.lm_head.bias", "visual.lm_head.weight"]
    assert torch.equal(head.mask_token, released.mask_token)
    assert not torch.equal(head.lm_head.weight, released.lm_head.weight[:32])


def test_mim_head_round_trips_through_a_checkpoint(clip, tmp_path):
    from demoprof_ros.training.outputs import mim_state_of

    head = mim.MIMHead.for_visual(clip.visual, 16)
    save_checkpoint(tmp_path, clip, model_config("tiny-64"), {"note": "mim"}, mim_state=mim_state_of(head))
    loaded = load_model(tmp_path)
    assert set(loaded.mim_state) == set(mim_state_of(head))
    fresh = mim.MIMHead.for_visual(loaded.model.visual, 16)
    reused, skipped = mim.load_mim_state(fresh, loaded.mim_state)
    assert not skipped and len(reused) == len(head.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), head.state_dict().values()))
    assert json.loads((tmp_path / "meta.json").read_text())["note"] == "mim"


# --- MIM on part of the batch; targets cached per image ------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 4])
def test_masked_copy_for_the_first_k_images_only(clip, k):
    visual = clip.visual.eval()
    x = _images(4, seed=5)
    head = mim.MIMHead.for_visual(visual, 8)
    mask = mim.block_masks(k, mim.grid_size(visual), 0.4, seed=0)
    with torch.no_grad():
        clean, hidden = mim.encode_with_mim(visual, x, mask, head.mask_token)
        _, hidden_first = mim.encode_with_mim(visual, x[:k], mask, head.mask_token)
        reference = visual(x)
    assert clean.shape == (4, reference.shape[1]) and torch.allclose(clean, reference, atol=1e-5)
    assert hidden.shape == (k, 1 + 16, 64) and torch.allclose(hidden, hidden_first, atol=1e-5)


@pytest.mark.parametrize("shape", [(5, 16), (0, 16), (2, 15), (16,)])
def test_mask_that_does_not_fit_the_batch_is_refused(clip, shape):
    head = mim.MIMHead.for_visual(clip.visual, 8)
    with pytest.raises(mim.MIMError, match="does not fit"):
        mim.encode_with_mim(clip.visual, _images(4), torch.zeros(shape, dtype=torch.bool), head.mask_token)


def test_cached_targets_equal_fresh_ones_and_are_computed_once(clip, tmp_path, monkeypatch):
    codebook, _ = mim.CodebookTargets.build(clip.visual, lambda: iter([_images(8, seed=3)]), k=12,
                                            cache_dir=tmp_path, data_fingerprint="c", iters=3)
    data = _images(10, seed=7)  # the "training set": dataset index i -> data[i]
    cache = mim.CachedTargets(codebook, n_images=10, n_patches=16)
    assert cache.table.dtype == torch.int16 and cache.filled == 0 and cache.size == 12
    calls = []
    original = codebook.__class__.__call__
    monkeypatch.setattr(codebook.__class__, "__call__", lambda self, x: calls.append(len(x)) or original(self, x))
    for order in ([3, 1, 4], [1, 5, 9, 2], [6, 5, 3, 0, 8, 7], [9, 2, 6, 5]):  # overlapping batches
        index = torch.tensor(order)
        got = cache(data[index], index)
        assert got.dtype == torch.long and torch.equal(got, original(codebook, data[index]))
    assert cache.filled == 10 and sum(calls) == 10  # each image's teacher forward ran exactly once
    # identical loss to the uncached path
    mask = mim.block_masks(4, (4, 4), 0.4, seed=1)
    predictions = torch.randn(int(mask.sum()), 12, generator=torch.Generator().manual_seed(0))
    index = torch.tensor([9, 0, 4, 7])
    assert torch.equal(mim.mim_loss(predictions, cache(data[index], index), mask),
                       mim.mim_loss(predictions, original(codebook, data[index]), mask))
    with pytest.raises(mim.MIMError, match="out of range"):
        cache(data[:1], torch.tensor([10]))
