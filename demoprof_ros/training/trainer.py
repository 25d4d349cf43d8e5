"""Fine-tuning CLIP / FaRL on demographic image-caption pairs: FLYP contrastive loss + optional FaRL-style MIM.

One run per seed (`seeds`), each writing `<output>/seed_<seed>/` with what the scorer and the ROS node load
directly (`model.safetensors` + `meta.json`, via models.save_checkpoint) and the run's record (`log.csv`,
`curves.png`). `<output>/summary.json` gives mean +- std over the seeds.

Recipe (FLYP, Goyal et al. 2023): the pre-training objective (losses.ContrastiveLoss) on captions built
from the labels ("a photo of a 20-29 year old East Asian woman.", one template sampled per step, or the
row's own caption), AdamW (lr 1e-5, weight decay 0.1, betas (0.9, 0.98), eps 1e-6 as in CLIP's training;
no decay on biases, norms, embeddings, the mask token and logit_scale), cosine schedule with linear warm-up,
gradient clipping, bf16/fp16 autocast on GPU and fp32 on CPU. After every epoch the zero-shot head is rebuilt
from the fine-tuned text tower (a fresh scorer.ZeroShotScorer) and validation macro-F1 is measured per enabled
attribute.

Model selection: `selection: mean_f1` (default) is the mean macro-F1 over the enabled attributes that have
validation labels - each attribute counts the same however many classes it has; `joint_f1` is the macro-F1
of the arg-max full description (the paper's joint task) over samples labelled for every enabled attribute.
Coarse validation labels (UTKFace race 'Asian', 'Others') are scored in the coarse vocabulary with the
predicted probabilities merged into it (evaluation.coarse); samples without a label for an attribute
do not count for it. Early stopping after `patience` epochs without improvement; the best epoch's weights
are what the output holds.

Bookkeeping: everything is seeded (python, numpy, torch, the data order and the caption sampling per epoch,
the MIM masks per step), so a run resumed from `resume.pt` (weights, optimiser, scheduler, scaler, early
stopping, history; saved after every epoch, loaded with weights_only=True, removed when the run completes)
continues exactly where it stopped. GPU kernels are not forced deterministic (too slow), so GPU runs match
closely rather than bit for bit.

Multi-GPU: `torchrun --nproc_per_node N -m demoprof_ros.training.trainer ...` runs DistributedDataParallel (NCCL on
GPUs, gloo on CPU). `batch_size` is per process; the contrastive loss sees the global batch. Validation,
checkpoints and logs happen on rank 0 only.

The parts: config.py (settings), data.py (what a run reads), loop.py (module, step, epochs, resume),
validation.py (per-epoch scores), optim.py (AdamW, schedule, early stopping), outputs.py (files written),
distributed.py (processes, seeding, precision); this module runs the seeds and is the command line.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

from ..core.models import ModelLoadError
from ..core.outputs import OutputPathError, check_output_dir
from .config import ARG_KEYS, TrainConfig, TrainConfigError, add_arguments, load_config
from .data import prepare_data
from .datasets import DatasetError
from .distributed import setup_distributed, teardown_distributed
from .loop import train_one
from .mim import MIMError
from .outputs import RunResult, summarize, summary_line, write_summary


def run(cfg: TrainConfig) -> tuple[list[RunResult], dict[str, Any]]:
    """Every seed of `cfg`, then the summary (written by rank 0 to <output>/summary.json)."""
    env = setup_distributed(cfg.device)
    try:
        data = prepare_data(cfg)
        results = [train_one(cfg, seed, data, env) for seed in cfg.seeds]
        summary = summarize(results, cfg)
        if env.main:
            write_summary(summary, cfg)
        return results, summary
    finally:
        teardown_distributed(env)


def cmd_train(args: argparse.Namespace) -> int:
    """`demoprof train`: exit 0 done, 2 bad settings or data, 1 the run failed."""
    overrides = {k: getattr(args, k, None) for k in ARG_KEYS}
    cfg = None
    try:
        cfg = load_config(args.config, overrides)
        check_output_dir(cfg.output, "output")  # before the data is read and the model loaded
        if cfg.cache:
            check_output_dir(cfg.cache, "cache")
        results, summary = run(cfg)
    except (TrainConfigError, DatasetError, ModelLoadError, MIMError, OutputPathError) as exc:
        print(f"demoprof train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Each finished epoch is already on disk (resume.pt and the best model.safetensors, written atomically).
        where = f" in {cfg.output}" if cfg is not None else ""
        print(f"\ndemoprof train: interrupted; finished epochs are kept{where} (continue with --resume)",
              file=sys.stderr)
        return 130
    except (RuntimeError, FloatingPointError, OSError) as exc:
        print(f"demoprof train: failed: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(summary_line(summary, cfg.output))
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="fine-tune CLIP / FaRL (FLYP + optional MIM)",
                              description=__doc__.splitlines()[0])
    add_arguments(p)
    p.set_defaults(func=cmd_train)


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (`python -m demoprof_ros.training.trainer`, torchrun); same options as `demoprof train`."""
    parser = argparse.ArgumentParser(prog="demoprof-train", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose + 1, 2),
                            format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return cmd_train(args)


train_main = main

if __name__ == "__main__":
    sys.exit(main())
