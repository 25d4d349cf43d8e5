"""The experiment config (config/experiments/*.yaml) read and checked: every problem names the file and
the key, before anything trains. experiment.py runs what this describes.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


from ..core.taxonomy import ATTRIBUTE_NAMES
from ..core.yaml_files import read_yaml

ZERO_SHOT = "zero-shot"
DEFAULT_METRICS = ("joint.accuracy", "age.accuracy", "gender.accuracy", "race.accuracy")
_TOP_KEYS = {"name", "description", "data_root", "output", "device", "models_dir", "attributes", "seeds", "split",
             "datasets", "models", "train_sets", "test_sets", "training", "evaluation", "metrics",
             "primary_metric"}


class ExperimentConfigError(ValueError):
    """A config that cannot run; the message names the file and the key."""


@dataclass
class DatasetSpec:
    name: str
    path: Path | None = None        # one labelled set, split by the experiment
    train: list[Path] = field(default_factory=list)  # or explicit files
    val: list[Path] = field(default_factory=list)
    test: list[Path] = field(default_factory=list)
    limit: int | None = None        # stratified subset of this many rows before splitting


@dataclass
class ModelSpec:
    name: str
    base: str
    training: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExperimentConfig:
    name: str
    source: Path
    output: Path
    datasets: dict[str, DatasetSpec]
    models: list[ModelSpec]
    train_sets: dict[str, list[str]]
    test_sets: list[str]
    seeds: list[int]
    device: str = "cpu"
    models_dir: str = ""
    attributes: tuple[str, ...] = ATTRIBUTE_NAMES
    test_fraction: float = 0.3
    split_seed: int = 0
    training: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    primary_metric: str = DEFAULT_METRICS[0]
    description: str = ""


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand(text: str) -> str:
    """`${VAR}` / `${VAR:-default}` from the environment (an unset ${VAR} without default is an error)."""
    def repl(match: re.Match) -> str:
        value = os.environ.get(match.group(1))
        if value:
            return value
        if match.group(2) is not None:
            return match.group(2)
        raise ExperimentConfigError(f"${{{match.group(1)}}} is not set and has no default")
    return _ENV.sub(repl, str(text))


def load_experiment(path: str | Path, output: str | Path | None = None, device: str | None = None,
                    check_paths: bool = True) -> ExperimentConfig:
    """Read and check a config; every problem names the file and key, before anything runs."""
    path = Path(path)
    data = _read_yaml(path)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ExperimentConfigError(f"{path}: unknown keys {unknown}; expected some of {sorted(_TOP_KEYS)}")
    fail = _failer(path, data)
    datasets = _datasets(path, data, _resolver(path, data, fail), fail)
    models = _models(path, data, fail)
    train_sets = _train_sets(path, data, datasets, fail)
    test_sets = data.get("test_sets")
    if not isinstance(test_sets, list) or not test_sets or any(t not in datasets for t in test_sets):
        raise fail("test_sets", f"a list of names from datasets ({sorted(datasets)})")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise fail("seeds", "a list of distinct integers")
    split = data.get("split") or {}
    if not isinstance(split, dict) or set(split) - {"test_fraction", "seed"}:
        raise fail("split", "a mapping with test_fraction and/or seed")
    test_fraction = float(split.get("test_fraction", 0.3))
    if not 0.0 < test_fraction < 1.0:
        raise ExperimentConfigError(f"{path}: split.test_fraction: expected a fraction in (0, 1), got {test_fraction}")
    attributes, metrics = _attributes_and_metrics(data, fail)
    name = str(data.get("name") or path.stem)
    out = Path(output) if output else Path(expand(data.get("output", f"runs/{name}")))
    cfg = ExperimentConfig(
        name=name, source=path, output=out, datasets=datasets, models=models, train_sets=train_sets,
        test_sets=list(test_sets), seeds=list(seeds), device=str(device or data.get("device", "cpu")),
        models_dir=str(expand(data.get("models_dir", "")) or ""), attributes=tuple(attributes),
        test_fraction=test_fraction, split_seed=int(split.get("seed", 0)), training=dict(data.get("training") or {}),
        evaluation=dict(data.get("evaluation") or {}), metrics=list(metrics),
        primary_metric=str(data.get("primary_metric", metrics[0])), description=str(data.get("description", "")))
    _check_training_keys(cfg)
    if check_paths:
        check_data_paths(cfg)
    return cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path, ExperimentConfigError, "experiment config")
    if data is None:
        raise ExperimentConfigError(f"experiment config {path} is empty")
    return data


def _failer(path: Path, data: dict[str, Any]) -> Callable[[str, str], ExperimentConfigError]:
    """fail(key, expected): the error naming the file, the key and the value found."""
    def fail(key: str, expected: str) -> ExperimentConfigError:
        return ExperimentConfigError(f"{path}: {key}: expected {expected}, got {data.get(key)!r}"
                                     if key in data else f"{path}: {key}: {expected}")
    return fail


def _resolver(path: Path, data: dict[str, Any], fail: Callable) -> Callable[[Any, str], Path]:
    """resolve(value, key): a data path, ${VAR}-expanded, relative to data_root (itself relative to the file)."""
    try:
        root = Path(expand(data.get("data_root", ".")))
    except ExperimentConfigError as exc:
        raise ExperimentConfigError(f"{path}: data_root: {exc}") from None
    root = root if root.is_absolute() else (path.parent / root)

    def resolve(value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value:
            raise fail(key, "a path")
        p = Path(expand(value)).expanduser()
        return p if p.is_absolute() else root / p
    return resolve


def _datasets(path: Path, data: dict[str, Any], resolve: Callable[[Any, str], Path],
              fail: Callable) -> dict[str, DatasetSpec]:
    datasets: dict[str, DatasetSpec] = {}
    if not isinstance(data.get("datasets"), dict) or not data["datasets"]:
        raise fail("datasets", "a mapping name -> {path: ...} or {train:, test:, val:}")
    for name, entry in data["datasets"].items():
        key = f"datasets.{name}"
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict):
            raise ExperimentConfigError(f"{path}: {key}: expected a path or a mapping")
        extra = sorted(set(entry) - {"path", "train", "val", "test", "limit"})
        if extra:
            raise ExperimentConfigError(f"{path}: {key}: unknown keys {extra}; expected path, train, val, test, limit")
        spec = DatasetSpec(name=str(name), limit=entry.get("limit"))
        if "path" in entry:
            spec.path = resolve(entry["path"], f"{key}.path")
        for part in ("train", "val", "test"):
            values = entry.get(part) or []
            values = [values] if isinstance(values, str) else values
            setattr(spec, part, [resolve(v, f"{key}.{part}") for v in values])
        if len(spec.test) > 1:
            raise ExperimentConfigError(f"{path}: {key}.test: expected one test file (merge them into one CSV)")
        if spec.path is None and not spec.test:
            raise ExperimentConfigError(f"{path}: {key}: give `path` (split by the experiment) or explicit `test` "
                                        "(and `train`) files")
        if spec.limit is not None and (not isinstance(spec.limit, int) or spec.limit < 4):
            raise ExperimentConfigError(f"{path}: {key}.limit: expected an integer >= 4, got {spec.limit!r}")
        datasets[spec.name] = spec
    return datasets


def _models(path: Path, data: dict[str, Any], fail: Callable) -> list[ModelSpec]:
    models: list[ModelSpec] = []
    raw_models = data.get("models")
    if isinstance(raw_models, dict):
        raw_models = [{"name": k, **(v or {})} for k, v in raw_models.items()]
    if not isinstance(raw_models, list) or not raw_models:
        raise fail("models", "a list of {name, base, training}")
    for i, entry in enumerate(raw_models):
        if not isinstance(entry, dict) or not entry.get("base"):
            raise ExperimentConfigError(f"{path}: models[{i}]: expected a mapping with `base` (clip | farl | tiny | "
                                        "a checkpoint) and optionally `name`, `training`")
        extra = sorted(set(entry) - {"name", "base", "training"})
        if extra:
            raise ExperimentConfigError(f"{path}: models[{i}]: unknown keys {extra}")
        models.append(ModelSpec(name=str(entry.get("name") or entry["base"]), base=str(entry["base"]),
                                training=dict(entry.get("training") or {})))
    if len({m.name for m in models}) != len(models):
        raise ExperimentConfigError(f"{path}: models: names must be distinct")
    return models


def _train_sets(path: Path, data: dict[str, Any], datasets: dict[str, DatasetSpec],
                fail: Callable) -> dict[str, list[str]]:
    train_sets: dict[str, list[str]] = {}
    raw_train = data.get("train_sets")
    if isinstance(raw_train, list):
        raw_train = {str(t): ([] if t == ZERO_SHOT else [t]) for t in raw_train}
    if not isinstance(raw_train, dict) or not raw_train:
        raise fail("train_sets", f"a list of data set names (and/or {ZERO_SHOT!r}) or a mapping name -> [data sets]")
    for name, members in raw_train.items():
        members = [] if name == ZERO_SHOT else ([members] if isinstance(members, str) else list(members or []))
        missing = [m for m in members if m not in datasets]
        if missing or (name != ZERO_SHOT and not members):
            raise ExperimentConfigError(f"{path}: train_sets.{name}: unknown data sets {missing}; expected names "
                                        f"from datasets ({sorted(datasets)})")
        for m in members:
            if datasets[m].path is None and not datasets[m].train:
                raise ExperimentConfigError(f"{path}: datasets.{m}: used for training but has neither `path` nor "
                                            "`train` files")
        train_sets[str(name)] = members
    return train_sets


def _attributes_and_metrics(data: dict[str, Any], fail: Callable) -> tuple[list[str], list[str]]:
    attributes = data.get("attributes", list(ATTRIBUTE_NAMES))
    if isinstance(attributes, str):
        attributes = [a.strip() for a in attributes.split(",")]
    if not attributes or any(a not in ATTRIBUTE_NAMES for a in attributes):
        raise fail("attributes", f"a non-empty subset of {list(ATTRIBUTE_NAMES)}")
    metrics = data.get("metrics", list(DEFAULT_METRICS))
    if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
        raise fail("metrics", "a list such as [joint.accuracy, gender.macro_f1, retrieval.full]")
    for key in ("training", "evaluation"):
        if not isinstance(data.get(key) or {}, dict):
            raise fail(key, "a mapping")
    return attributes, metrics


def _check_training_keys(cfg: ExperimentConfig) -> None:
    from ..training.config import TrainConfig

    allowed = set(TrainConfig.__dataclass_fields__) - {"model", "train", "val", "output", "seeds", "attributes",
                                                       "device", "models_dir", "resume"}
    for where, values in [("training", cfg.training)] + [(f"models.{m.name}.training", m.training)
                                                          for m in cfg.models]:
        bad = sorted(set(values) - allowed)
        if bad:
            raise ExperimentConfigError(f"{cfg.source}: {where}: unknown or experiment-owned training keys {bad}; "
                                        f"expected some of {sorted(allowed)}")
    allowed_eval = {"batch_size", "retrieval_k", "min_group_size", "ece_bins", "plots", "limit"}
    bad = sorted(set(cfg.evaluation) - allowed_eval)
    if bad:
        raise ExperimentConfigError(f"{cfg.source}: evaluation: unknown keys {bad}; expected some of "
                                    f"{sorted(allowed_eval)}")


def check_data_paths(cfg: ExperimentConfig) -> None:
    """Every data path the grid uses exists (paper.yaml ships placeholders the user must fill)."""
    used = set(cfg.test_sets) | {m for members in cfg.train_sets.values() for m in members}
    for name in sorted(used):
        spec = cfg.datasets[name]
        for p in ([spec.path] if spec.path else []) + spec.train + spec.val + spec.test:
            if not p.exists():
                raise ExperimentConfigError(
                    f"{cfg.source}: datasets.{name}: {p} not found. Edit the path in the config (placeholders such "
                    "as /path/to/... must be filled in), or set data_root / $DEMOPROF_DATA")
