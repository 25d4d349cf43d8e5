"""FLYP contrastive loss: the CLIP formula, the temperature cap, gradients, duplicates, and the DDP gather."""
import math

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from demoprof_ros.training.losses import (MAX_LOGIT_SCALE, ContrastiveLoss, clamp_logit_scale_, gather_features,
                                 logit_scale_value)


def _naive(image, text, scale):
    """The loss written out row by row: -log softmax of the matching pair, both directions, averaged."""
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    n = image.shape[0]
    sims = scale * image @ text.T
    i2t = -sum(sims[i, i] - torch.logsumexp(sims[i], 0) for i in range(n)) / n
    t2i = -sum(sims[i, i] - torch.logsumexp(sims[:, i], 0) for i in range(n)) / n
    return (i2t + t2i) / 2


@pytest.mark.parametrize("n,dim,log_scale", [(2, 8, 0.0), (7, 16, math.log(1 / 0.07)), (16, 32, 3.0)])
def test_matches_written_out_formula(n, dim, log_scale):
    g = torch.Generator().manual_seed(n)
    image, text = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
    got = ContrastiveLoss()(image, text, torch.tensor(log_scale))
    assert got.item() == pytest.approx(_naive(image, text, math.exp(log_scale)).item(), rel=1e-5)


def test_extremes_and_feature_scale_invariance():
    n = 8
    aligned = torch.eye(n, 16)
    loss = ContrastiveLoss()
    assert loss(aligned, aligned, torch.tensor(math.log(100.0))).item() < 1e-3
    # Identical rows carry no information: exactly log(n).
    same = torch.ones(n, 16)
    assert loss(same, same, torch.tensor(2.0)).item() == pytest.approx(math.log(n), rel=1e-6)
    # Features are normalised inside: their length does not matter.
    x, y = torch.randn(n, 16), torch.randn(n, 16)
    assert loss(3 * x, 0.5 * y, torch.tensor(1.0)).item() == pytest.approx(loss(x, y, torch.tensor(1.0)).item())


def test_temperature_is_capped_at_100_and_clamp_keeps_parameter_in_range():
    x, y = torch.randn(6, 8), torch.randn(6, 8)
    loss = ContrastiveLoss()
    assert logit_scale_value(torch.tensor(math.log(1000.0))).item() == pytest.approx(MAX_LOGIT_SCALE)
    assert loss(x, y, torch.tensor(math.log(1000.0))).item() == pytest.approx(
        loss(x, y, torch.tensor(math.log(100.0))).item(), rel=1e-6)
    param = torch.nn.Parameter(torch.tensor(9.0))
    clamp_logit_scale_(param)
    assert param.item() == pytest.approx(math.log(100.0))
    param.data.fill_(-1.0)
    clamp_logit_scale_(param)
    assert param.item() == 0.0


def test_gradients_reach_features_and_temperature():
    image = torch.randn(5, 8, requires_grad=True)
    text = torch.randn(5, 8, requires_grad=True)
    scale = torch.nn.Parameter(torch.tensor(2.0))
    ContrastiveLoss()(image, text, scale).backward()
    for tensor in (image, text, scale):
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0


def test_duplicate_captions_keep_the_plain_objective():
    """Two images sharing one caption text: the target stays the image's own column (FLYP), so the loss of a
    perfect embedding is log(2)/2-ish, not 0 as a label-aware loss would give."""
    image = torch.eye(4, 8)
    text = image.clone()
    text[1] = text[0]  # images 0 and 1 have the same caption
    image[1] = image[0]
    got = ContrastiveLoss()(image, text, torch.tensor(math.log(100.0)))
    assert got.item() == pytest.approx(_naive(image, text, 100.0).item(), rel=1e-5)
    assert got.item() == pytest.approx(math.log(2) / 2, rel=1e-3)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="must match"):
        ContrastiveLoss()(torch.randn(3, 8), torch.randn(4, 8), torch.tensor(1.0))


def test_gather_is_identity_for_one_process():
    x = torch.randn(3, 4)
    assert gather_features(x, 0, 1) is x


def _ddp_worker(rank, world, port, image, text, scale, queue):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        rows = image.shape[0] // world
        local_image = image[rank * rows:(rank + 1) * rows].clone().requires_grad_(True)
        local_text = text[rank * rows:(rank + 1) * rows].clone().requires_grad_(True)
        loss = ContrastiveLoss(rank, world)(local_image, local_text, torch.tensor(scale))
        loss.backward()
        # numpy copies, not tensors: a tensor on a queue is shared through a file descriptor that vanishes
        # when this process exits before the parent has read it.
        queue.put((rank, loss.item(), local_image.grad.numpy().copy(), local_text.grad.numpy().copy()))
    finally:
        dist.destroy_process_group()


def test_two_process_gather_equals_the_global_batch_loss():
    """Under DDP each rank gets the global-batch loss and, for its own rows, the global gradient."""
    import socket

    torch.manual_seed(0)
    image, text, scale = torch.randn(8, 16), torch.randn(8, 16), 2.5
    ref_image, ref_text = image.clone().requires_grad_(True), text.clone().requires_grad_(True)
    reference = ContrastiveLoss()(ref_image, ref_text, torch.tensor(scale))
    reference.backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, image, text, scale, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank, loss, grad_image, grad_text in results:
        assert loss == pytest.approx(reference.item(), rel=1e-5)
        assert torch.allclose(torch.from_numpy(grad_image), ref_image.grad[rank * 4:(rank + 1) * 4], atol=1e-6)
        assert torch.allclose(torch.from_numpy(grad_text), ref_text.grad[rank * 4:(rank + 1) * 4], atol=1e-6)
