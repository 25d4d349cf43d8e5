"""Training entry point: config, schedule, early stopping, a real smoke run, resume, torchrun, bad input, learning."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from demoprof_ros.training import outputs, trainer as train
from demoprof_ros.training.config import ARG_KEYS, TrainConfig, TrainConfigError, load_config
from demoprof_ros.training.data import prepare_data
from demoprof_ros.training.losses import ContrastiveLoss
from demoprof_ros.training.loop import FineTuneModule
from demoprof_ros.training.optim import CosineWithWarmup, EarlyStopping, param_groups
from demoprof_ros.training.datasets import read_dataset, stratified_split
from demoprof_ros.core.models import load_model
from demoprof_ros.core.scorer import ZeroShotScorer
from helpers_train import interrupt_after_first_epoch, one_thread  # noqa: F401  (one_thread: autouse fixture)

ROOT = Path(__file__).resolve().parent.parent
FAST = dict(model="tiny", epochs=2, batch_size=4, lr=5e-4, workers=0, device="cpu", progress=False)


def _write_csv(path, rows, header=("file", "age", "gender", "race")):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _rows(samples):
    return [[str(s.path), *(s.labels[a] or "" for a in ("age", "gender", "race"))] for s in samples]


@pytest.fixture(scope="module")
def faces24(shared_data, tmp_path_factory):
    """24 real FairFace crops (absolute paths in a CSV outside the data folder)."""
    samples, _ = read_dataset(shared_data / "fairface_val_sample")
    return _write_csv(tmp_path_factory.mktemp("faces") / "labels.csv", _rows(samples[:24]))


def _run(csv_path, output, **overrides):
    cfg = load_config(None, {**FAST, "train": [str(csv_path)], "output": str(output), **overrides})
    return train.run(cfg)


@pytest.fixture(scope="module")
def smoke(faces24, tmp_path_factory):
    output = tmp_path_factory.mktemp("smoke")
    results, summary = _run(faces24, output)
    return output, results, summary



def test_fine_tuning_keeps_the_base_models_crop_margin(faces24, tmp_path):
    """A model trained on tight crops (the shipped one) is still profiled on tight crops once fine-tuned."""
    import helpers_checkpoints as ck
    from demoprof_ros.core.models import save_checkpoint

    base = save_checkpoint(tmp_path / "base", ck.tiny_model(), ck.tiny_cfg(), {"crop_margin": 0.1})
    results, _ = _run(faces24, tmp_path / "out", model=str(base), epochs=1, max_steps_per_epoch=1)
    assert json.loads((results[0].output / "meta.json").read_text())["crop_margin"] == 0.1

# --- pieces ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scores,patience,stop_after,best_epoch", [
    ([0.1, 0.2, 0.15, 0.19, 0.2, 0.3], 3, 5, 2),          # a tie is no improvement
    ([0.1, 0.2, 0.15, 0.25, 0.2, 0.2, 0.2], 3, 7, 4),     # the counter restarts at a new best
    ([0.5, 0.4, 0.6, 0.7], 2, None, 4),                   # never stops
    ([float("nan"), 0.1, float("nan"), float("nan")], 2, 4, 2),  # NaN never improves
])
def test_early_stopping_on_crafted_sequences(scores, patience, stop_after, best_epoch):
    stopper = EarlyStopping(patience)
    stopped = None
    for epoch, score in enumerate(scores, start=1):
        stopper.update(score, epoch)
        if stopper.should_stop:
            stopped = epoch
            break
    assert stopped == stop_after
    assert stopper.best_epoch == best_epoch
    clone = EarlyStopping(patience)
    clone.load_state_dict(stopper.state_dict())
    assert clone.state_dict() == stopper.state_dict()


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    f = CosineWithWarmup(warmup=4, total=20, min_ratio=0.1)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == pytest.approx(1.0)
    values = [f(s) for s in range(4, 21)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert f(20) == pytest.approx(0.1) and f(12) == pytest.approx(0.1 + 0.9 * 0.5)


def test_weight_decay_skips_biases_norms_embeddings_temperature_and_mask_token():
    from demoprof_ros.training.mim import MIMHead
    from demoprof_ros.core.models import build_model, model_config

    clip = build_model(model_config("tiny-64"))
    module = FineTuneModule(clip, MIMHead.for_visual(clip.visual, 8))
    decay, no_decay = param_groups(module, 0.1)
    names = {id(p): n for n, p in module.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {"clip.logit_scale", "clip.positional_embedding", "clip.token_embedding.weight",
            "clip.visual.class_embedding", "clip.visual.ln_pre.weight", "mim_head.mask_token",
            "clip.visual.transformer.resblocks.0.attn.in_proj_bias"} <= skipped
    assert {"clip.visual.conv1.weight", "clip.visual.proj", "clip.text_projection",
            "mim_head.lm_head.weight", "clip.transformer.resblocks.0.mlp.c_fc.weight"} <= decayed
    assert len(decayed) + len(skipped) == len(names)


@pytest.mark.parametrize("fraction,batch,expected", [(1.0, 8, 8), (0.5, 8, 4), (0.25, 8, 2), (0.5, 7, 4),
                                                     (0.1, 30, 3), (0.01, 8, 1)])
def test_mim_count_is_the_ceiling_of_fraction_times_batch(fraction, batch, expected):
    from demoprof_ros.core.models import build_model, model_config

    assert FineTuneModule(build_model(model_config("tiny-64")), None, fraction).mim_count(batch) == expected


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_module_refuses_a_fraction_outside_0_1(fraction):
    from demoprof_ros.training.mim import MIMError
    from demoprof_ros.core.models import build_model, model_config

    with pytest.raises(MIMError, match="mim_fraction"):
        FineTuneModule(build_model(model_config("tiny-64")), None, fraction)


def test_mim_fraction_half_runs_mim_on_half_the_batch_and_trains_the_mask_token():
    import open_clip

    from demoprof_ros.training.mim import MIMError, MIMHead, block_masks, grid_size, mim_loss, pixel_targets
    from demoprof_ros.core.models import build_model, model_config

    torch.manual_seed(0)
    clip = build_model(model_config("tiny-64")).train()
    module = FineTuneModule(clip, MIMHead.for_visual(clip.visual, 16 * 16 * 3), mim_fraction=0.5)
    x = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    tokens = open_clip.get_tokenizer("ViT-B-16-quickgelu")(["a photo of a face."] * 6)
    k = module.mim_count(6)
    assert k == 3
    mask = block_masks(k, grid_size(clip.visual), 0.4, seed=0)
    image_features, text_features, logit_scale, predictions = module(x, tokens, mask)
    assert image_features.shape[0] == text_features.shape[0] == 6  # the contrastive loss sees every image
    assert predictions.shape == (int(mask.sum()), 16 * 16 * 3) and int(mask.sum()) == 3 * round(0.4 * 16)
    with torch.no_grad():  # the images without MIM take the plain path
        assert torch.allclose(image_features[k:], clip.encode_image(x[k:]), atol=1e-5)
    loss = ContrastiveLoss()(image_features, text_features, logit_scale) \
        + mim_loss(predictions, pixel_targets(x[:k], 16), mask)
    loss.backward()
    assert module.mim_head.mask_token.grad is not None and module.mim_head.mask_token.grad.abs().sum() > 0
    assert clip.visual.conv1.weight.grad.abs().sum() > 0
    with pytest.raises(MIMError, match="expected 3"):  # a full batch of masks does not match the fraction
        module(x, tokens, block_masks(6, grid_size(clip.visual), 0.4, seed=0))


def test_config_file_plus_overrides(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("epochs: 4\nlr: 2.0e-5\nseeds: [1, 2]\nmim: true\ntrain: a.csv\n")
    cfg = load_config(path, {"epochs": 7, "lr": None, "attributes": "gender,age"})
    assert (cfg.epochs, cfg.lr, cfg.seeds, cfg.mim, cfg.train) == (7, 2e-5, [1, 2], True, ["a.csv"])
    assert cfg.attributes == ["gender", "age"]


def test_shipped_train_yaml_documents_every_setting():
    import yaml

    data = yaml.safe_load((ROOT / "config" / "train.yaml").read_text())
    assert set(data) == {f.name for f in __import__("dataclasses").fields(TrainConfig)}
    cfg = load_config(ROOT / "config" / "train.yaml", {"train": ["x.csv"]})
    assert cfg == TrainConfig(train=["x.csv"])  # the file states the built-in defaults


@pytest.mark.parametrize("content,message", [
    ("epoch: 3\n", "unknown settings"),
    ("epochs: three\n", "epochs='three'"),
    ("mask_ratio: 1.5\n", "mask_ratio"),
    ("mim_fraction: 0\n", "mim_fraction=0.0: expected a fraction in \\(0, 1\\]"),
    ("mim_fraction: 1.25\n", "mim_fraction=1.25"),
    ("mim_fraction: -0.5\n", "mim_fraction"),
    ("mim_fraction: half\n", "mim_fraction='half': expected a float"),
    ("selection: accuracy\n", "selection"),
    ("train_repeat: [1, 2]\n", "train_repeat=\\[1, 2\\]: expected one count per train source \\(1\\)"),
    ("train_repeat: [0]\n", "counts >= 1"),
    ("train_repeat: [1.5]\n", "train_repeat=\\[1.5\\]: expected a list"),
    ("train_repeat: [3]\n", "a separate val set"),
    ("augment: mixup\n", "augment='mixup'"),
    ("- a\n- b\n", "mapping"),
])
def test_bad_config_names_file_and_key(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [a.csv]\n" + content if not content.startswith("-") else content)
    with pytest.raises(TrainConfigError, match=message) as info:
        load_config(path)
    assert "bad.yaml" in str(info.value)


# --- a real run --------------------------------------------------------------------------------------------------

def test_smoke_run_writes_outputs_and_loss_falls(smoke):
    output, results, summary = smoke
    run = output / "seed_0"
    assert {p.name for p in run.iterdir()} == {"model.safetensors", "meta.json", "log.csv", "curves.png"}
    history = results[0].history
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]
    with open(run / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and float(rows[0]["train_loss"]) > 0
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["base_model"] == "tiny" and meta["seed"] == 0 and meta["complete"] is True
    assert meta["best_epoch"] == results[0].best_epoch and len(meta["epochs"]) == 2
    assert meta["data"]["train"]["n"] + meta["data"]["val"]["n"] == 24
    assert len(meta["data"]["train"]["fingerprint"]) == 16
    assert meta["prompts"]["description_templates"] and meta["taxonomy"]["gender"] == ["Male", "Female"]
    assert meta["loss"]["mim"] is None and meta["package_version"]
    assert meta["attribute_scoring"] == "prompts"  # "" = the base model's, and tiny declares none
    assert meta["model_cfg"]["vision_cfg"]["image_size"] == 64
    saved = json.loads((output / "summary.json").read_text())
    assert saved["seeds"] == [0] and saved["metrics"]["score"]["std"] == 0.0
    assert summary["metrics"]["score"]["mean"] == pytest.approx(results[0].best_score)


def test_saved_checkpoint_scores_like_the_in_memory_model(smoke, shared_data):
    output, results, _ = smoke
    crops = [cv2.imread(str(p)) for p in sorted((shared_data / "fairface_val_sample" / "images").glob("*.jpg"))[:5]]
    reloaded = load_model(output / "seed_0")
    in_memory = ZeroShotScorer(results[0].loaded).score(crops)
    from_disk = ZeroShotScorer(reloaded).score(crops)
    for a, b in zip(in_memory, from_disk):
        for name in ("age", "gender", "race"):
            assert a.attributes[name].distribution == pytest.approx(b.attributes[name].distribution, abs=1e-6)
        assert [c.text for c in a.joint] == [c.text for c in b.joint]
    # ...and the fine-tuning changed the model: not the starting weights any more.
    start = load_model("tiny").model.state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in reloaded.model.state_dict().items())


def test_existing_run_is_not_overwritten(smoke, faces24, capsys):
    output, _, _ = smoke
    code = train.main(["--model", "tiny", "--train", str(faces24), "--output", str(output), "--device", "cpu",
                       "--workers", "0", "--no-progress"])
    assert code == 2 and "--resume" in capsys.readouterr().err
    # --resume on a finished run keeps it as it is and reports it again.
    before = (output / "seed_0" / "model.safetensors").stat().st_mtime_ns
    code = train.main(["--model", "tiny", "--train", str(faces24), "--output", str(output), "--device", "cpu",
                       "--workers", "0", "--no-progress", "--resume"])
    assert code == 0 and "demoprof-train: 1 seed(s)" in capsys.readouterr().out
    assert (output / "seed_0" / "model.safetensors").stat().st_mtime_ns == before


def test_resume_with_mim_continues_from_the_right_epoch(faces24, tmp_path, monkeypatch):
    """Interrupted after epoch 1 of 2 and resumed, a MIM run ends with exactly the weights of one unbroken run."""
    settings = dict(epochs=2, patience=5, mim=True, mim_codebook_size=16, cache=str(tmp_path / "cache"))
    unbroken, _ = _run(faces24, tmp_path / "unbroken", **settings)

    original = interrupt_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _run(faces24, tmp_path / "broken", **settings)
    monkeypatch.setattr(outputs, "save_resume", original)
    state = torch.load(tmp_path / "broken" / "seed_0" / "resume.pt", weights_only=True)
    assert state["epoch"] == 0 and len(state["history"]) == 1 and "mim_head" in state

    resumed, _ = _run(faces24, tmp_path / "broken", resume=True, **settings)
    assert [r["epoch"] for r in resumed[0].history] == [1, 2]
    assert not (tmp_path / "broken" / "seed_0" / "resume.pt").exists()
    for a, b in zip(unbroken[0].history, resumed[0].history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert math.isfinite(b["train_mim"]) and b["train_mim"] > 0
    final_a = load_model(tmp_path / "unbroken" / "seed_0")
    final_b = load_model(tmp_path / "broken" / "seed_0")
    for key, value in final_a.model.state_dict().items():
        assert torch.allclose(value, final_b.model.state_dict()[key], atol=1e-6), key
    assert set(final_b.mim_state) and all(torch.allclose(v, final_b.mim_state[k], atol=1e-6)
                                          for k, v in final_a.mim_state.items())
    meta = json.loads((tmp_path / "broken" / "seed_0" / "meta.json").read_text())
    assert meta["loss"]["mim"]["target"] == "codebook" and meta["loss"]["mim"]["codebook_size"] == 16
    assert len(list((tmp_path / "cache").glob("mim-codebook-*.safetensors"))) == 1  # built once, shared


def test_torchrun_two_cpu_processes_write_one_checkpoint(faces24, tmp_path):
    """DDP on gloo, with MIM so that the codebook is built by rank 0 and loaded by rank 1."""
    output = tmp_path / "ddp"
    config = tmp_path / "ddp.yaml"
    config.write_text("mim: true\nmim_codebook_size: 16\n")
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", "2",
           "-m", "demoprof_ros.training.trainer",
           "--config", str(config), "--model", "tiny", "--train", str(faces24), "--epochs", "1",
           "--batch-size", "4", "--output", str(output), "--device", "cpu", "--workers", "0", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("demoprof-train:") == 1  # the summary comes from rank 0 only
    assert [p.relative_to(output) for p in output.rglob("model.safetensors")] == [Path("seed_0/model.safetensors")]
    assert len(list(output.rglob("mim-codebook-*"))) == 1 and not list(output.rglob("resume.pt"))
    meta = json.loads((output / "seed_0" / "meta.json").read_text())
    assert meta["optimizer"]["world_size"] == 2 and len(meta["epochs"]) == 1
    assert meta["loss"]["mim"]["codebook_size"] == 16 and meta["epochs"][0]["train_mim"] > 0
    assert load_model(output / "seed_0").mim_state


def test_cli_registration():
    import argparse

    parser = argparse.ArgumentParser()
    train.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--train", "a.csv", "--seeds", "0", "1", "--no-mim", "--mask-ratio", "0.5",
                              "--mim-fraction", "0.25"])
    assert args.func is train.cmd_train and args.seeds == [0, 1] and args.mim is False and args.mask_ratio == 0.5
    cfg = load_config(None, {k: getattr(args, k, None) for k in ARG_KEYS})
    assert cfg.mim_fraction == 0.25 and cfg.mask_ratio == 0.5


# --- bad input ------------------------------------------------------------------------------------------------------

@pytest.fixture
def bad_sets(shared_data, tmp_path):
    """Two good rows plus one bad row of each kind."""
    samples, _ = read_dataset(shared_data / "fairface_val_sample")
    good = _rows(samples[:6])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return {
        "unknown label": _write_csv(tmp_path / "u.csv", good + [[good[0][0], "20-29", "Robot", "White"]]),
        "missing file": _write_csv(tmp_path / "m.csv", good + [[str(tmp_path / "nope.jpg"), "20-29", "Male", ""]]),
        "unreadable image": _write_csv(tmp_path / "c.csv", good + [[str(corrupt), "20-29", "Male", "White"]]),
    }


@pytest.mark.parametrize("reason", ["unknown label", "missing file", "unreadable image"])
def test_bad_rows_are_reported_and_skipped_or_fail_with_strict(bad_sets, tmp_path, reason, capsys):
    path = bad_sets[reason]
    cfg = load_config(None, {**FAST, "train": [str(path)], "output": str(tmp_path / "o")})
    data = prepare_data(cfg)
    report = data.info["train"]["reports"][0]
    assert report["counts"] == {reason: 1} and report["problems"][0][0].endswith(f"{path.name}:8")
    assert len(data.train) + len(data.val) == 6
    code = train.main(["--model", "tiny", "--train", str(path), "--strict", "--output", str(tmp_path / "s"),
                       "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and f"{path.name}:8" in err and reason in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("content", ["file,age,gender,race\n", ""])
def test_empty_dataset_fails_clearly(tmp_path, content, capsys):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    code = train.main(["--model", "tiny", "--train", str(path), "--output", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "empty.csv" in err


def test_missing_data_file_fails_clearly(tmp_path, capsys):
    code = train.main(["--model", "tiny", "--train", str(tmp_path / "absent.csv"), "--output", str(tmp_path / "o")])
    assert code == 2 and "absent.csv" in capsys.readouterr().err


# --- learning on real data --------------------------------------------------------------------------------------

#: Held-out gender accuracy must beat always answering the majority class by this many points.
LEARNING_MARGIN = 0.05
#: From scratch needs a far higher learning rate than fine-tuning (1e-5). Measured here: 8 epochs take ~15 s
#: on one CPU thread; held-out accuracy 0.64-0.67 against a majority share of 0.54 over three training seeds
#: and two held-out splits (margins 0.10-0.14; this seed and split: 0.653), so the bar leaves room for
#: platform differences.
LEARNING = dict(epochs=8, batch_size=32, lr=3e-4, check_images=False)


def test_tiny_model_from_scratch_learns_gender_beyond_majority(shared_data, tmp_path):
    """FLYP from random weights on FairFace + UTKFace: the zero-shot gender head (class prompts the training
    never saw verbatim) beats the majority-class baseline on held-out images by LEARNING_MARGIN."""
    samples = []
    for name in ("fairface_val_sample", "fairface_agegender_540", "utkface_crop_part1"):
        samples += read_dataset(shared_data / name)[0]
    trainval, held = stratified_split(samples, 0.2, seed=1, keys=("gender",))
    csv_path = _write_csv(tmp_path / "trainval.csv", _rows(trainval))
    results, _ = _run(csv_path, tmp_path / "run", cache=str(tmp_path / "cache"), **LEARNING)
    scorer = ZeroShotScorer(load_model(tmp_path / "run" / "seed_0"), attributes=("gender",), joint_top_k=0)
    predicted = [s.attributes["gender"].top for s in scorer.score([cv2.imread(str(s.path)) for s in held])]
    truth = [s.labels["gender"] for s in held]
    accuracy = float(np.mean([p == t for p, t in zip(predicted, truth)]))
    majority = max(truth.count("Male"), truth.count("Female")) / len(truth)
    assert accuracy >= majority + LEARNING_MARGIN, (accuracy, majority, results[0].history)
