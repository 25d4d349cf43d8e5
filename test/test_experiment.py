"""`demoprof experiment`: config checking, the shipped configs, and the CI config end to end on CPU."""
import argparse
import time
from pathlib import Path

import numpy as np
import pytest

from demoprof_ros.evaluation import experiment as exp

CONFIGS = Path(__file__).resolve().parent.parent / "config" / "experiments"


@pytest.mark.parametrize("name, cells, seeds", [("paper", 2 * 2 + 6 * 5 * 2, 5), ("ablations", 14 * 5 * 2, 5),
                                                ("ci_small", 1 * 3 + 4 * 2 * 3, 2), ("family", 4 + 2 * 5 * 4, 5)])
def test_shipped_configs_load_and_plan(name, cells, seeds):
    cfg = exp.load_experiment(CONFIGS / f"{name}.yaml", check_paths=False)
    assert len(exp.plan(cfg)) == cells and len(cfg.seeds) == seeds
    if name == "paper":
        assert cfg.training["lr"] == 1e-5 and cfg.training["epochs"] == 10 and cfg.training["patience"] == 3
        assert {m.name: m.training["mim"] for m in cfg.models} == {"CLIP": False, "FaRL+MIM": True}
    if name == "family":  # the base `make reproduction` pre-trains, and the recipe it names
        base = exp.load_experiment(CONFIGS / "family.yaml", check_paths=False).models[0].base
        from demoprof_ros.training.config import load_config
        pre = load_config(CONFIGS / "family_base.yaml", {"train": ["utkface_extra"]})
        assert base == f"{pre.output}/seed_0" and pre.augment == cfg.training["augment"] == "faces"
        assert cfg.training["epochs"] == 10 and cfg.training["patience"] == 3


def test_paper_placeholders_are_refused_with_the_key(tmp_path):
    with pytest.raises(exp.ExperimentConfigError, match=r"datasets\.\w+: /path/to/data/.* not found"):
        exp.load_experiment(CONFIGS / "paper.yaml")


BASE = """
name: t
data_root: {root}
datasets: {{a: {{path: a}}}}
models: [{{base: tiny}}]
train_sets: [zero-shot, a]
test_sets: [a]
"""


@pytest.mark.parametrize("extra, message", [
    ("colour: red", "unknown keys ['colour']"),
    ("seeds: [1, 1]", "seeds: expected a list of distinct integers"),
    ("training: {lr_typo: 1}", "unknown or experiment-owned training keys ['lr_typo']"),
    ("training: {output: x}", "experiment-owned training keys ['output']"),
    ("evaluation: {k: 3}", "evaluation: unknown keys ['k']"),
    ("split: {test_fraction: 1.5}", "split.test_fraction"),
])
def test_bad_config_names_the_key(tmp_path, extra, message):
    (tmp_path / "a").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text(BASE.format(root=tmp_path) + extra + "\n")
    with pytest.raises(exp.ExperimentConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        exp.load_experiment(path)


def test_unknown_training_set_member_and_env_expansion(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    path = tmp_path / "c.yaml"
    path.write_text(BASE.format(root="${MY_DATA:-nowhere}").replace("train_sets: [zero-shot, a]",
                                                                    "train_sets: {x: [a, b]}"))
    with pytest.raises(exp.ExperimentConfigError, match=r"train_sets\.x: unknown data sets \['b'\]"):
        exp.load_experiment(path)
    path.write_text(BASE.format(root="${MY_DATA:-nowhere}"))
    with pytest.raises(exp.ExperimentConfigError, match="nowhere/a not found"):
        exp.load_experiment(path)
    monkeypatch.setenv("MY_DATA", str(tmp_path))
    assert exp.load_experiment(path).datasets["a"].path == tmp_path / "a"


def test_metric_value_reads_dotted_names():
    results = {"datasets": {"x": {
        "attributes": {"gender": {"metrics": {"accuracy": 0.5}, "ece": 0.1}},
        "joint": {"metrics": {"accuracy": 0.25}, "top5_accuracy": 0.75}, "joint_coarse": None,
        "retrieval": {"summary": {"full": {"mean_precision": 0.2}}}}}}
    assert exp.metric_value(results, "gender.accuracy") == 0.5
    assert exp.metric_value(results, "gender.ece") == 0.1
    assert exp.metric_value(results, "joint.accuracy") == 0.25
    assert exp.metric_value(results, "joint.top5_accuracy") == 0.75
    assert exp.metric_value(results, "joint_coarse.accuracy") is None
    assert exp.metric_value(results, "retrieval.full") == 0.2
    assert exp.metric_value(results, "age.accuracy") is None
    with pytest.raises(ValueError, match="unknown part"):
        exp.metric_value(results, "height.accuracy")


# --- the CI config, end to end ------------------------------------------------------------------------------


def _cli(argv):
    parser = argparse.ArgumentParser()
    exp.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["experiment", *argv])
    return args.func(args)


def test_ci_small_runs_end_to_end_and_fills_every_cell(shared_data, tmp_path, monkeypatch, capsys):
    """The CI grid: 8 one-epoch trainings + 27 evaluations on CPU (see the runtime note in the report)."""
    monkeypatch.setenv("DEMOPROF_DATA", str(shared_data))
    out = tmp_path / "ci"
    started = time.perf_counter()
    assert _cli([str(CONFIGS / "ci_small.yaml"), "--output", str(out), "--no-progress"]) == 0
    elapsed = time.perf_counter() - started
    cfg = exp.load_experiment(CONFIGS / "ci_small.yaml", output=out)
    table = (out / "table.md").read_text()
    body = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| model /")]
    assert len(body) == len(cfg.metrics) * len(exp.rows(cfg)) == 5 * 5
    assert all(len(line.split("|")) == 2 + 1 + len(cfg.test_sets) for line in body)
    assert "n/a" not in table
    summary = exp.collect(cfg, exp.plan(cfg))
    for row in summary["rows"]:
        for test_set in cfg.test_sets:
            stats = summary["cells"][row][test_set]["stats"]
            assert all(stats[m] is not None for m in cfg.metrics), (row, test_set)
            assert stats[cfg.primary_metric]["n"] == (1 if "zero-shot" in row else 2)
    _, train_sets, test_sets, means, _ = exp.cross_dataset_matrix(cfg, summary)
    assert means.shape == (2, 3, 3) and np.isfinite(means).all()
    assert (out / "cross_dataset.png").stat().st_size > 5000 and (out / "cross_dataset.md").is_file()
    # Fine-tuned checkpoints are loadable folders; the splits are CSVs of paths (no images copied).
    assert (out / "models" / "tiny" / "genuser" / "seed_1" / "model.safetensors").is_file()
    assert not list(out.rglob("*.jpg"))
    print(f"\nci_small grid: {elapsed:.0f} s")

    # A second run finds every cell done: no training, no evaluation.
    import demoprof_ros.evaluation.evaluate as ev
    import demoprof_ros.training.trainer as train

    monkeypatch.setattr(train, "run", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    assert _cli([str(CONFIGS / "ci_small.yaml"), "--output", str(out), "--no-progress"]) == 0
    assert (out / "table.md").read_text().split("\n", 1)[1] == table.split("\n", 1)[1]
    assert _cli([str(CONFIGS / "ci_small.yaml"), "--output", str(out), "--dry-run"]) == 0
    assert "0 of 27 cells to run" in capsys.readouterr().out


def test_split_is_written_once_and_a_changed_split_is_refused(tmp_path):
    from helpers_eval import write_images, write_labels

    write_images(tmp_path / "a" / "images", 10)
    write_labels(tmp_path / "a" / "labels.csv",
                 [(f"images/img_{i:02d}.jpg", "20-29", ("Male", "Female")[i % 2], "White") for i in range(10)])
    path = tmp_path / "c.yaml"
    path.write_text(BASE.format(root=tmp_path) + f"output: {tmp_path / 'out'}\n")
    cfg = exp.load_experiment(path)
    splits = exp.prepare_splits(cfg)
    train = splits["a"]["train"][0].read_text().splitlines()
    test = splits["a"]["test"][0].read_text().splitlines()
    assert len(train) - 1 == 7 and len(test) - 1 == 3        # 30 % test, header excluded
    assert not set(train[1:]) & set(test[1:])
    assert str((tmp_path / "a" / "images").resolve()) in test[1]   # absolute paths, no image copied
    assert exp.prepare_splits(cfg) == splits                 # reused as written
    path.write_text(path.read_text().replace("datasets: {a: {path: a}}", "datasets: {a: {path: a, limit: 8}}"))
    with pytest.raises(exp.ExperimentConfigError, match=r"split of \['a'\] differs"):
        exp.prepare_splits(exp.load_experiment(path))
