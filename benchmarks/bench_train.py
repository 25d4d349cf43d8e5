#!/usr/bin/env python3
"""Training throughput: images/s of a fine-tuning step (contrastive, + MIM), the data loader alone, and MFU.

The step is the trainer's own loop body, demoprof_ros.training.loop.train_step, called with StepParts built
from the trainer's parts (FineTuneModule, ContrastiveLoss, make_adamw with param_groups, MIMHead, the MIM
targets, GradScaler; no LR schedule) on a random-weight model of --arch; inputs are uint8 face images already
in memory, so the step is measured without the loader, and the loader is measured on its own
(FaceImageDataset + DataLoader as training/data.py builds them) on a shared data set, decoding JPEGs each
time or reading the uint8 memmap cache.

Variants, measured interleaved (one step of each in turn):
  contrastive               FLYP step as the trainer runs it (captions encoded up to their longest token)
  contrastive-fulltext      the same with the full 77-token text context (the trainer before it adopted
                            scorer.encode_text_trimmed): what that change saved
  mim-pixels                + MIM, MAE-style pixel targets (no teacher)
  mim-codebook              + MIM, FaRL-style token targets from the frozen teacher every step (the trainer before
                            CachedTargets)
  mim-codebook-cached       the same targets looked up from a per-image table computed once (mim.CachedTargets,
                            what the trainer does)
  mim-codebook-cached-part  MIM on only --mim-fraction of each batch (cached targets; the trainer's mim_fraction
                            setting): the masked copy doubles the image tower, so MIM's cost scales with it

FLOPs: counted with torch.utils.flop_counter.FlopCounterMode on one step (matmuls, convolutions and attention,
forward and backward; 1 multiply-add = 2 FLOPs), divided by the batch size. MFU = images/s x FLOPs per image /
peak, the peak given by --peak-tflops (default: 989 TFLOP/s, H100 SXM dense bf16, on CUDA; none on CPU,
where the achieved GFLOP/s is reported instead).

    python benchmarks/bench_train.py --arch tiny-64 --batch-size 8 --steps 2          # smoke
    python benchmarks/bench_train.py --batch-size 8 --steps 3                         # ViT-B/16 on CPU
    python benchmarks/bench_train.py --device cuda --precision bf16 --batch-size 256 --steps 20
"""
from __future__ import annotations

import argparse
import copy
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RANDOM_WEIGHTS_NOTE, ROOT, command_line, cuda_sync, machine_info, machine_line,  # noqa: E402
                     markdown_table, set_threads, summary, timed, write_json)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from demoprof_ros.training.losses import ContrastiveLoss  # noqa: E402
from demoprof_ros.training.mim import (CachedTargets, CodebookTargets, MIMHead, check_vit, encode_with_mim,  # noqa: E402
                                      grid_size, pixel_targets)
from demoprof_ros.core.models import build_model, model_config  # noqa: E402
from demoprof_ros.core.prompts import PromptSet  # noqa: E402
from demoprof_ros.core.taxonomy import CLASSES, descriptions  # noqa: E402
from demoprof_ros.training.loop import FineTuneModule, StepParts, train_step  # noqa: E402
from demoprof_ros.training.optim import make_adamw, param_groups  # noqa: E402
from demoprof_ros.core.transforms import OPENAI_MEAN, OPENAI_STD, normalize_uint8  # noqa: E402

VARIANTS = ("contrastive", "contrastive-fulltext", "mim-pixels", "mim-codebook", "mim-codebook-cached",
            "mim-codebook-cached-part")
H100_BF16_TFLOPS = 989.4  # NVIDIA H100 SXM5 dense BF16 tensor-core peak (the PCIe card: 756)


class FullTextModule(FineTuneModule):
    """FineTuneModule.forward with the text tower over the whole 77-token context (open_clip's encode_text)."""

    def forward(self, images, tokens, mask=None):
        predictions = None
        if self.mim_head is not None and mask is not None:
            image_features, hidden = encode_with_mim(self.clip.visual, images, mask, self.mim_head.mask_token)
            predictions = self.mim_head(hidden, mask)
        else:
            image_features = self.clip.encode_image(images)
        return image_features, self.clip.encode_text(tokens), self.clip.logit_scale, predictions


class Step:
    """One variant's model, optimiser and step: training.loop.train_step on the variant's StepParts."""

    def __init__(self, variant: str, base: nn.Module, args, device: torch.device, autocast_dtype) -> None:
        self.variant = variant
        self.device = device
        clip = copy.deepcopy(base).to(device).float().train()
        head, targets, grid = None, None, None
        torch.manual_seed(args.seed)  # same head initialisation in every variant: comparable losses
        if variant.startswith("mim"):
            check_vit(clip.visual)  # MIM needs patch tokens: ViT towers only
            patch = int(clip.visual.patch_size[0])
            out_dim = patch * patch * 3 if variant == "mim-pixels" else args.codebook_size
            head = MIMHead.for_visual(clip.visual, out_dim, args.mim_head_layers).to(device)
            grid = grid_size(clip.visual)
            if variant == "mim-pixels":
                targets = lambda x, idx: pixel_targets(x, patch)  # noqa: E731
            else:
                centroids = torch.nn.functional.normalize(
                    torch.randn(args.codebook_size, clip.visual.transformer.width,
                                generator=torch.Generator().manual_seed(0)), dim=-1)
                teacher = copy.deepcopy(clip.visual).eval().requires_grad_(False)
                codebook = CodebookTargets(teacher.to(device), centroids.to(device))
                if variant == "mim-codebook":
                    targets = lambda x, idx: codebook(x)  # noqa: E731
                else:  # cached (and part), as the trainer does
                    targets = CachedTargets(codebook, args.batch_size, grid[0] * grid[1])
        module_cls = FullTextModule if variant == "contrastive-fulltext" else FineTuneModule
        fraction = args.mim_fraction if variant == "mim-codebook-cached-part" else 1.0
        module = module_cls(clip, head, fraction)
        self.parts = StepParts(module, make_adamw(param_groups(module, 0.1), 1e-5),
                               torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16),
                               ContrastiveLoss(), OPENAI_MEAN, OPENAI_STD, device, autocast_dtype, targets=targets,
                               grid=grid, mask_ratio=args.mask_ratio, mim_weight=1.0, grad_clip=1.0)
        self.step_index = 0

    def prime(self, images_u8: torch.Tensor, index: torch.Tensor) -> None:
        """Fill the cached variant's target table (once per data set in a real run, not per step)."""
        if self.variant.startswith("mim-codebook-cached"):
            x = normalize_uint8(images_u8.to(self.device), OPENAI_MEAN, OPENAI_STD)
            self.parts.targets(x, index)

    def __call__(self, images_u8: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor) -> float:
        values = train_step(self.parts, images_u8, tokens, index, (0, 0, self.step_index, 0))
        self.step_index += 1
        return float(values[0])


def synthetic_batch(args, image_size: int, tokenizer, seed: int = 0):
    """uint8 face-sized images (random pixels: speed does not depend on them), captions from the templates."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (args.batch_size, image_size, image_size, 3), generator=g, dtype=torch.uint8)
    prompts, rng = PromptSet(), random.Random(seed)
    descs = descriptions(tuple(CLASSES))
    captions = [prompts.caption(descs[rng.randrange(len(descs))], rng) for _ in range(args.batch_size)]
    return images, tokenizer(captions), torch.arange(args.batch_size), captions


def count_flops(step: Step, batch) -> float:
    """FLOPs of one training step (forward + backward, counted by torch), per image."""
    from torch.utils.flop_counter import FlopCounterMode
    images, tokens, index, _ = batch
    counter = FlopCounterMode(display=False)
    with counter:
        step(images, tokens, index)
    return counter.get_total_flops() / images.shape[0]


def analytic_forward_flops(cfg: dict, text_tokens: int | None = None) -> dict[str, float]:
    """Forward FLOPs per sample of a ViT + text transformer: 24 w^2 + 4 L w per token and layer (QKV, output,
    4x MLP; QK^T and AV), plus the patch embedding; 1 multiply-add = 2 FLOPs."""
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    size = v["image_size"] if isinstance(v["image_size"], int) else v["image_size"][0]
    n = (size // v["patch_size"]) ** 2 + 1
    w = v["width"]
    mlp = v.get("mlp_ratio", 4.0)
    image = v["layers"] * n * ((8 + 4 * mlp) * w * w + 4 * n * w) + 2 * 3 * v["patch_size"] ** 2 * w * (n - 1)
    lt, wt = text_tokens or t.get("context_length", 77), t["width"]
    text = t["layers"] * lt * ((8 + 4 * t.get("mlp_ratio", 4.0)) * wt * wt + 4 * lt * wt)
    return {"image_fwd": float(image), "text_fwd": float(text), "train_step_3x": 3.0 * (image + text)}


def loader_bench(args, image_size: int) -> list[dict[str, Any]]:
    """images/s of FaceImageDataset + DataLoader (the trainer's settings), without and with the uint8 cache.

    The cache (decoded face images) is written to a temporary folder that is deleted when the study ends.
    """
    from demoprof_ros.training.datasets import FaceImageDataset, build_cache, cache_path, read_dataset
    from demoprof_ros.training.data import Captioner, collate, seed_worker
    data_root = shared_data_dir()
    if data_root is None:
        return [{"error": "shared data not found (set DEMOPROF_DATA or put ../shared/data beside the checkout)"}]
    samples, report = read_dataset(data_root / args.loader_set)
    samples = samples[:args.loader_images] if args.loader_images else samples
    captioner = Captioner(PromptSet(), list(CLASSES), seed=0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="demoprof-bench-cache-") as tmp:
        build_s, _ = timed(lambda: build_cache(samples, image_size, cache_path(tmp, samples, image_size)))
        for cached in (False, True):
            dataset = FaceImageDataset(samples, image_size, captioner=captioner, cache_dir=tmp if cached else None,
                                       write_cache=False)
            for workers in args.loader_workers:
                loader = torch.utils.data.DataLoader(dataset, batch_size=args.loader_batch_size or args.batch_size,
                                                     shuffle=True,
                                                     drop_last=True, num_workers=workers, collate_fn=collate,
                                                     worker_init_fn=seed_worker,
                                                     persistent_workers=False,
                                                     generator=torch.Generator().manual_seed(0))
                times, firsts, steady = [], [], []
                for _ in range(args.loader_epochs):
                    start = time.perf_counter()
                    n, first, first_n = 0, None, 0
                    for images, _, _ in loader:
                        n += images.shape[0]
                        if first is None:
                            first, first_n = time.perf_counter() - start, images.shape[0]
                    times.append(time.perf_counter() - start)
                    firsts.append(first)
                    if n > first_n and times[-1] > first:
                        steady.append((n - first_n) / (times[-1] - first))
                rows.append({"set": args.loader_set, "images": n, "cache": cached, "workers": workers,
                             "epochs": args.loader_epochs, "images_per_s": n / summary(times)["median_ms"] * 1000,
                             "first_batch_s": summary(firsts)["median_ms"] / 1000,
                             "steady_images_per_s": sorted(steady)[len(steady) // 2] if steady else None,
                             "cache_build_s": build_s if cached else None})
                print(f"  loader cache={cached} workers={workers}: {rows[-1]['images_per_s']:.0f} images/s",
                      flush=True)
    return rows


def shared_data_dir() -> Path | None:
    import os
    for candidate in (os.environ.get("DEMOPROF_DATA"), str(ROOT.parent / "shared" / "data")):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="ViT-B-16-quickgelu", help="ViT-B-16-quickgelu, tiny-224 or tiny-64 (smoke)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up step)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="autocast dtype as the trainer resolves it: auto = bf16 on CUDA with bf16 support, else fp32")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--mask-ratio", type=float, default=0.4)
    p.add_argument("--codebook-size", type=int, default=512)
    p.add_argument("--mim-head-layers", type=int, default=1)
    p.add_argument("--mim-fraction", type=float, default=0.25,
                   help="share of each batch that gets the MIM copy in the 'mim-codebook-cached-part' variant")
    p.add_argument("--loader-batch-size", type=int, default=0,
                   help="batch size of the loader study (0 = --batch-size)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak of the device for MFU (default: 989.4 on CUDA = H100 SXM bf16 dense; none on CPU)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (one extra step per variant)")
    p.add_argument("--loader-set", default="utkface_crop_part1", help="shared data set for the loader study")
    p.add_argument("--loader-images", type=int, default=0, help="use only the first N images (0 = all)")
    p.add_argument("--loader-workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--loader-epochs", type=int, default=2)
    p.add_argument("--no-loader", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    set_threads(args.threads)
    torch.manual_seed(args.seed)

    from demoprof_ros.training.distributed import resolve_precision
    device = torch.device(args.device)
    autocast_dtype = resolve_precision(args.precision, device)
    peak = args.peak_tflops if args.peak_tflops is not None else (H100_BF16_TFLOPS if device.type == "cuda" else None)
    print(f"bench_train: {args.arch} on {device} (autocast {autocast_dtype}), batch {args.batch_size}; "
          f"{RANDOM_WEIGHTS_NOTE}", flush=True)
    cfg = model_config(args.arch)
    base = build_model(cfg)
    import open_clip
    tokenizer = open_clip.get_tokenizer("ViT-B-16-quickgelu",
                                        context_length=int(cfg.get("text_cfg", {}).get("context_length", 77)))
    image_size = cfg["vision_cfg"]["image_size"]
    image_size = int(image_size if isinstance(image_size, int) else image_size[0])
    batch = synthetic_batch(args, image_size, tokenizer, args.seed)
    images, tokens, index, captions = batch
    results: dict[str, Any] = {"benchmark": "train", "command": command_line(), "args": vars(args),
                               "machine": machine_info(args.device), "note": RANDOM_WEIGHTS_NOTE,
                               "autocast": str(autocast_dtype), "peak_tflops": peak}
    longest = int(tokens.argmax(-1).max()) + 1
    if "patch_size" in cfg["vision_cfg"]:  # the analytic count is for ViT towers; a timm tower has only the counted FLOPs
        results["analytic_flops_per_image"] = analytic_forward_flops(cfg)
        results["analytic_flops_per_image_trimmed_text"] = analytic_forward_flops(cfg, longest)
    results["caption_tokens_longest"] = longest
    sync = cuda_sync(args.device)
    started = time.perf_counter()

    steps = {}
    for v in args.variants:
        steps[v] = Step(v, base, args, device, autocast_dtype)
        steps[v].prime(images, index)
        steps[v](images, tokens, index)  # warm-up: allocator, oneDNN / cuBLAS plans, optimiser state
    flops = {}
    if not args.no_flops:
        for v in args.variants:
            flops[v] = count_flops(steps[v], batch)
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    losses: dict[str, float] = {}
    for _ in range(args.steps):
        for v in args.variants:  # interleaved
            s, losses[v] = timed(lambda: steps[v](images, tokens, index), sync)
            times[v].append(s)
    rows = []
    base_ms = summary(times[args.variants[0]])["median_ms"]
    for v in args.variants:
        row = {"variant": v, **summary(times[v])}
        row["images_per_s"] = args.batch_size / row["median_ms"] * 1000
        row["vs_first"] = row["median_ms"] / base_ms
        if v in flops:
            row["flops_per_image"] = flops[v]
            achieved = row["images_per_s"] * flops[v]
            row["achieved_tflops"] = achieved / 1e12
            if peak:
                row["mfu"] = achieved / (peak * 1e12)
        if device.type == "cuda":
            row["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        row["last_loss"] = losses[v]
        rows.append(row)
        print(f"  {v}: {row['median_ms']:.0f} ms/step, {row['images_per_s']:.2f} images/s", flush=True)
    results["steps"] = rows
    del steps
    if not args.no_loader:
        results["loader"] = loader_bench(args, image_size)
    results["wall_s"] = time.perf_counter() - started
    print_report(results, args)
    write_json(args.out, results)
    return 0


def print_report(results: dict[str, Any], args) -> None:
    m = results["machine"]
    print(f"\n## Training step: {args.arch}, {args.device}, autocast {results['autocast']}, batch {args.batch_size}\n")
    print(machine_line(m))
    print(f"Note: {RANDOM_WEIGHTS_NOTE}.\n")
    first = results["steps"][0]["variant"]
    rows = [[r["variant"], r["median_ms"], r["p95_ms"], r["images_per_s"], f"{r['vs_first']:.2f}x",
             f"{r['flops_per_image'] / 1e9:.1f}" if "flops_per_image" in r else "-",
             f"{r['achieved_tflops'] * 1000:.1f}" if "achieved_tflops" in r else "-",
             f"{r['mfu'] * 100:.1f} %" if "mfu" in r else "-", f"{r['last_loss']:.3f}"] for r in results["steps"]]
    print(markdown_table(["variant", "step p50 ms", "step p95 ms", "images/s", f"time vs {first}",
                          "GFLOP/image (counted)", "achieved GFLOP/s",
                          f"MFU (peak {results['peak_tflops'] or '-'} TFLOP/s)", "loss"], rows))
    print(f"\n{args.steps} timed steps per variant after one warm-up, interleaved.", end="")
    a, t = results.get("analytic_flops_per_image"), results.get("analytic_flops_per_image_trimmed_text")
    if a and t:
        print(f" Analytic forward GFLOP/image: "
              f"image {a['image_fwd'] / 1e9:.1f}, text {a['text_fwd'] / 1e9:.2f} (77 tokens) / {t['text_fwd'] / 1e9:.2f} "
              f"(trimmed to {results['caption_tokens_longest']}); x3 for a training step = "
              f"{a['train_step_3x'] / 1e9:.1f}.", end="")
    print()
    loader = results.get("loader")
    if loader:
        if "error" in loader[0]:
            print(f"\nLoader: skipped: {loader[0]['error']}")
        else:
            print(f"\nData loader alone ({loader[0]['set']}, {loader[0]['images']} images per epoch, batch "
                  f"{args.loader_batch_size or args.batch_size}, {args.loader_epochs} epochs each, the trainer's "
                  f"DataLoader settings):")
            print(markdown_table(["uint8 memmap cache", "workers", "images/s (whole epoch)", "first batch s",
                                  "images/s after the first batch"],
                                 [["yes" if r["cache"] else "no (decode JPEG)", r["workers"], r["images_per_s"],
                                   r["first_batch_s"], r["steady_images_per_s"] or "-"] for r in loader]))
            build = next((r["cache_build_s"] for r in loader if r["cache_build_s"]), None)
            if build:
                print(f"cache built once in {build:.1f} s")
    print(f"\ntotal wall time {results['wall_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
