"""Face data sets for training and evaluation: one reader for every supported layout, splits, captions, loading.

Layouts read by `read_dataset`:
- CSV `file,age,gender,race[,caption]` (more columns are ignored, so FairFace's own `fairface_label_*.csv` reads
  as is); `file` is relative to the CSV's folder. A CSV with only `file,caption` is a caption-only set.
- JSONL, one object per line with `file` and `caption` (and optionally age/gender/race) keys.
- A folder holding `labels.csv` (the shared sets' form).
- A folder of UTKFace-style names `age_gender_race_*.jpg` (codes from taxonomy.UTKFACE_*).

Every label goes through taxonomy.normalize_label, so the project's vocabulary is the only one downstream. A row
that cannot be used is never dropped silently: it is recorded in a DatasetReport with file:line and reason, and
skipped - or, with strict=True, the first one raises DatasetError.

Images are served as uint8 RGB (HxWx3) tensors; normalisation runs on the batch on the device
(transforms.normalize_uint8), which keeps workers cheap and host->device copies small. An opt-in on-disk cache
decodes and resizes once into a uint8 .npy that later runs memory-map.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.images import ImageError, load_image
from ..core.prompts import PromptSet
from ..core.taxonomy import (ATTRIBUTE_NAMES, CLASSES, COARSE_CLASSES, UNMAPPABLE, UTKFACE_GENDER, UTKFACE_RACE,
                             Description, LabelError, age_group, normalize_label)
from ..core.transforms import stack_uint8

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LABELS_FILE = "labels.csv"


class DatasetError(ValueError):
    """A data set that cannot be used (or, in strict mode, a bad row); the message names the file and row."""


@dataclass
class Sample:
    """One image with its labels (class, coarse label such as UTKFace 'Asian', or None when unknown)."""

    path: Path
    labels: dict[str, str | None]
    caption: str | None = None
    where: str = ""


@dataclass
class DatasetReport:
    """What a read kept and what it skipped, and why (for logs, meta.json and the evaluation report)."""

    source: str
    rows: int = 0
    kept: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    @property
    def skipped(self) -> int:
        return sum(self.counts.values())

    def add(self, where: str, reason: str, detail: str = "") -> None:
        self.counts[reason] += 1
        self.problems.append((where, f"{reason}: {detail}" if detail else reason))

    def summary(self, examples: int = 3) -> str:
        """One line, plus up to `examples` problem rows, e.g. for a log."""
        text = f"{self.source}: {self.rows} rows, {self.kept} kept, {self.skipped} skipped"
        if self.counts:
            text += " (" + ", ".join(f"{n} {reason}" for reason, n in self.counts.most_common()) + ")"
        for where, reason in self.problems[:examples]:
            text += f"\n  {where}: {reason}"
        if len(self.problems) > examples > 0:
            text += f"\n  ... and {len(self.problems) - examples} more"
        return text

    def to_dict(self) -> dict:
        return {"source": self.source, "rows": self.rows, "kept": self.kept, "skipped": self.skipped,
                "counts": dict(self.counts), "problems": [list(p) for p in self.problems]}


class _Reader:
    """Shared bookkeeping of the layout readers: report a bad row, or raise on it in strict mode."""

    def __init__(self, source: Path, strict: bool, check_images: bool):
        self.report = DatasetReport(source=str(source))
        self.strict = strict
        self.check_images = check_images
        self.samples: list[Sample] = []
        self._seen: dict[Path, str] = {}

    def bad(self, where: str, reason: str, detail: str = "") -> None:
        if self.strict:
            raise DatasetError(f"{where}: {reason}" + (f": {detail}" if detail else ""))
        self.report.add(where, reason, detail)

    def add(self, where: str, path: Path, raw_labels: dict[str, str | None], caption: str | None) -> None:
        """Validate one row (already counted in report.rows) and keep it, or report why not."""
        labels: dict[str, str | None] = {}
        for attribute in ATTRIBUTE_NAMES:
            value = raw_labels.get(attribute)
            try:
                labels[attribute] = normalize_label(attribute, value or "")
            except LabelError as exc:
                unmappable = (value or "").strip() in UNMAPPABLE.get(attribute, ())
                self.bad(where, "label not in taxonomy" if unmappable else "unknown label", str(exc))
                return
        if not path.is_file():
            self.bad(where, "missing file", str(path))
            return
        if path in self._seen:
            self.bad(where, "duplicate file", f"{path} already listed at {self._seen[path]}")
            return
        if self.check_images:
            try:
                load_image(path)
            except ImageError as exc:
                self.bad(where, "unreadable image", str(exc))
                return
        caption = (caption or "").strip() or None
        self._seen[path] = where
        self.samples.append(Sample(path=path, labels=labels, caption=caption, where=where))
        self.report.kept += 1


def write_labels_csv(path: Path, samples: Sequence[Sample]) -> Path:
    """`samples` as a labels CSV that read_dataset reads back (absolute file paths; no image is copied),
    written atomically so an interrupted run never leaves half a split behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", *ATTRIBUTE_NAMES, "caption"])
        for s in samples:
            writer.writerow([str(s.path.resolve()), *[s.labels.get(a) or "" for a in ATTRIBUTE_NAMES],
                             s.caption or ""])
    os.replace(tmp, path)
    return path


def read_dataset(path: str | Path, strict: bool = False,
                 check_images: bool = False) -> tuple[list[Sample], DatasetReport]:
    """Samples of a data set in any supported layout (see module doc) and the report of skipped rows.

    check_images decodes every image once to catch corrupt files at read time (slower); otherwise a corrupt
    image is caught when loaded, with an error naming it. Raises DatasetError when nothing usable is left.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"data set not found: {path}")
    if path.is_dir():
        labels = path / LABELS_FILE
        source = labels if labels.is_file() else path
    else:
        source = path
    reader = _Reader(source, strict, check_images)
    if source.is_dir():
        _read_utkface_folder(source, reader)
    elif source.suffix.lower() in (".jsonl", ".json"):
        _read_jsonl(source, reader)
    elif source.suffix.lower() == ".csv":
        _read_csv(source, reader)
    else:
        raise DatasetError(f"{source}: unsupported data file; expected a .csv, a .jsonl, a folder with "
                           f"{LABELS_FILE} or a folder of UTKFace-named images")
    if not reader.samples:
        raise DatasetError(f"no usable samples in {reader.report.summary()}")
    return reader.samples, reader.report


def _name(path: Path) -> str:
    """Short but unambiguous file name for `where` (shared sets all call theirs labels.csv)."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def _read_csv(path: Path, reader: _Reader) -> None:
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    with handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if header is None or not any(h.strip() for h in header):
            reader.bad(f"{_name(path)}:1", "empty file", "expected a header such as file,age,gender,race[,caption]")
            return
        columns = [h.strip().lower() for h in header]
        if "file" not in columns or not ({"caption", *ATTRIBUTE_NAMES} & set(columns)):
            raise DatasetError(f"{path}:1: header {header} lacks the columns needed; expected "
                               "file,age,gender,race[,caption] or file,caption")
        index = {name: columns.index(name) for name in ("file", "caption", *ATTRIBUTE_NAMES) if name in columns}
        line = 1
        for row in rows:
            start, line = line + 1, rows.line_num
            where = f"{_name(path)}:{start}"
            if not any(cell.strip() for cell in row):
                continue  # blank line
            reader.report.rows += 1
            if len(row) < len(columns):
                reader.bad(where, "missing columns", f"{len(row)} of {len(columns)} columns")
                continue
            values = {name: row[i] for name, i in index.items()}
            _add_row(reader, path, where, values)


def _read_jsonl(path: Path, reader: _Reader) -> None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None
    if not any(line.strip() for line in lines):
        reader.bad(f"{_name(path)}:1", "empty file", 'expected one JSON object per line with "file" and "caption"')
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{_name(path)}:{number}"
        reader.report.rows += 1
        try:
            values = json.loads(line)
        except json.JSONDecodeError as exc:
            reader.bad(where, "invalid JSON", str(exc))
            continue
        if not isinstance(values, dict) or not isinstance(values.get("file"), str):
            reader.bad(where, "missing columns", 'expected an object with a "file" string')
            continue
        _add_row(reader, path, where, {k: v if isinstance(v, str) else None for k, v in values.items()})


def _add_row(reader: _Reader, source: Path, where: str, values: dict[str, str | None]) -> None:
    file = (values.get("file") or "").strip()
    if not file:
        reader.bad(where, "missing columns", "empty file name")
        return
    reader.add(where, source.parent / file, {a: values.get(a) for a in ATTRIBUTE_NAMES}, values.get("caption"))


def _read_utkface_folder(folder: Path, reader: _Reader) -> None:
    """UTKFace names: `{age}_{gender}_{race}_{date}.jpg` (gender 0/1, race 0-4); other files are reported."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise DatasetError(f"{folder}: no {LABELS_FILE} and no images; expected a labels CSV or UTKFace-named "
                           "images (age_gender_race_date.jpg)")
    for path in files:
        where = f"{folder.name}/{path.name}"
        reader.report.rows += 1
        parts = path.name.split("_")
        if (len(parts) < 4 or not parts[0].isdigit() or parts[1] not in UTKFACE_GENDER
                or parts[2] not in UTKFACE_RACE):
            reader.bad(where, "bad file name", "expected age_gender_race_date.jpg with gender in "
                       f"{sorted(UTKFACE_GENDER)} and race in {sorted(UTKFACE_RACE)}")
            continue
        labels = {"age": age_group(int(parts[0])), "gender": UTKFACE_GENDER[parts[1]],
                  "race": UTKFACE_RACE[parts[2]]}
        reader.add(where, path, labels, None)


# --- splits and fingerprints -------------------------------------------------------------------------------


def stratified_split(samples: Sequence[Sample], val_fraction: float = 0.2, seed: int = 0,
                     keys: Sequence[str] = ("gender", "race", "age")) -> tuple[list[Sample], list[Sample]]:
    """(train, val): each stratum (label combination of `keys`, unknown = its own value) split proportionally.

    The total validation size is round(n * val_fraction) (at least one sample on each side when n >= 2);
    strata too small for a whole validation sample share the remainder by largest fractional part, ties
    broken by the seeded shuffle. Each stratum is shuffled by its own seeded generator, so the split is
    deterministic for a seed and the input order is kept within each side.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(samples)
    if n < 2:
        raise ValueError(f"need at least 2 samples to split, got {n}")
    strata: dict[tuple, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        strata[tuple(sample.labels.get(k) for k in keys)].append(i)
    order = sorted(strata, key=repr)
    random.Random(seed).shuffle(order)
    target = min(max(round(n * val_fraction), 1), n - 1)
    quota = {key: int(len(strata[key]) * val_fraction) for key in order}
    remainder = target - sum(quota.values())
    by_fraction = sorted(order, key=lambda k: len(strata[k]) * val_fraction - quota[k], reverse=True)
    for key in by_fraction[:max(remainder, 0)]:
        quota[key] += 1
    val_index: set[int] = set()
    for key in order:
        members = list(strata[key])
        random.Random(f"{seed}:{key!r}").shuffle(members)
        val_index.update(members[:quota[key]])
    train = [s for i, s in enumerate(samples) if i not in val_index]
    val = [s for i, s in enumerate(samples) if i in val_index]
    return train, val


def fingerprint(samples: Iterable[Sample]) -> str:
    """Stable hash of paths, labels, captions, file sizes and mtimes, in order (16 hex digits).

    Identifies the data a checkpoint was trained on (meta.json) and keys the image cache: editing, replacing
    or reordering an image changes it.
    """
    digest = hashlib.sha256()
    for sample in samples:
        try:
            stat = sample.path.stat()
        except OSError as exc:
            raise DatasetError(f"{sample.where or sample.path}: cannot stat {sample.path}: {exc}") from None
        labels = [sample.labels.get(a) for a in ATTRIBUTE_NAMES]
        record = [str(sample.path.resolve()), labels, sample.caption, stat.st_size, stat.st_mtime_ns]
        digest.update(json.dumps(record).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()[:16]


# --- captions ------------------------------------------------------------------------------------------------


COARSE_MODES = ("omit", "sample")


def description_of(sample: Sample, attributes: Iterable[str] = ATTRIBUTE_NAMES,
                   coarse: str = "omit", rng: random.Random | None = None) -> Description:
    """The sample's description over `attributes` (switched-off attributes never appear).

    A coarse label (UTKFace `Asian` = East or Southeast Asian) is left out with coarse="omit"; with
    coarse="sample" one of the fine classes it stands for is drawn per call, so the caption still says
    the race (half of such draws name the wrong one of two neighbours, but none names a far class).
    """
    enabled = set(attributes)
    values = {}
    for attribute, value in sample.labels.items():
        if attribute not in enabled or attribute not in CLASSES or value is None:
            continue
        if value in CLASSES[attribute]:
            values[attribute] = value
        elif coarse == "sample" and value in COARSE_CLASSES.get(attribute, {}):
            values[attribute] = (rng or random).choice(COARSE_CLASSES[attribute][value])
    return Description(**values)


def has_coarse_label(sample: Sample, attributes: Iterable[str] = ATTRIBUTE_NAMES) -> bool:
    """True when an enabled attribute carries a coarse label (e.g. UTKFace `Asian`, `Others`)."""
    return any(sample.labels.get(a) in COARSE_CLASSES.get(a, {}) for a in attributes)


def captions_for(sample: Sample, prompts: PromptSet, rng: random.Random | None = None,
                 attributes: Iterable[str] = ATTRIBUTE_NAMES, coarse: str = "omit") -> str:
    """The training caption: the row's own caption when present, else a sampled template (FLYP)."""
    if sample.caption:
        return sample.caption
    return prompts.caption(description_of(sample, attributes, coarse, rng), rng)


# --- images --------------------------------------------------------------------------------------------------


def decode_rgb(sample: Sample, size: int) -> np.ndarray:
    """size x size x 3 RGB uint8 of a sample's image; DatasetError naming the row and file when unusable."""
    try:
        image = load_image(sample.path)  # the profiler's decoder: same orientation, truncation checks
    except ImageError as exc:
        raise DatasetError(f"{sample.where or sample.path}: cannot load image: {exc}") from None
    return stack_uint8([image], size)[0]


def cache_path(cache_dir: str | Path, samples: Sequence[Sample], image_size: int) -> Path:
    """Where the uint8 image cache of these samples at this size lives."""
    return Path(cache_dir) / f"faces-{fingerprint(samples)}-{image_size}px.npy"


def build_cache(samples: Sequence[Sample], image_size: int, path: Path, workers: int | None = None) -> Path:
    """Decode and resize every image once into an N x S x S x 3 uint8 .npy (written via a temp file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                      shape=(len(samples), image_size, image_size, 3))
    try:
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:  # cv2 releases the GIL while decoding
            for i, image in enumerate(pool.map(lambda s: decode_rgb(s, image_size), samples)):
                array[i] = image
        array.flush()
        del array
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


class FaceImageDataset(Dataset):
    """Items are (uint8 HxWx3 RGB tensor, index), or (image, index, caption) when a captioner is given.

    cache_dir: None (default) decodes every image on each access and writes nothing. With a folder, a cache
    made earlier for the same samples (fingerprint) and size is memory-mapped; when absent it is built there
    if write_cache is True (face images on disk: a deliberate choice), else images are decoded on the fly.
    """

    def __init__(self, samples: Sequence[Sample], image_size: int,
                 captioner: Callable[[Sample], str] | None = None, cache_dir: str | Path | None = None,
                 write_cache: bool = True):
        if not samples:
            raise DatasetError("FaceImageDataset: no samples")
        self.samples = list(samples)
        self.image_size = int(image_size)
        self.captioner = captioner
        self.cache_file: Path | None = None
        self._array: np.ndarray | None = None
        if cache_dir is not None:
            path = cache_path(cache_dir, self.samples, self.image_size)
            if not path.is_file() and write_cache:
                build_cache(self.samples, self.image_size, path)
            if path.is_file():
                self.cache_file = path
                self._check_cache()

    def _images(self) -> np.ndarray | None:
        if self.cache_file is not None and self._array is None:
            self._array = np.load(self.cache_file, mmap_mode="r")
        return self._array

    def _check_cache(self) -> None:
        array = self._images()
        expected = (len(self.samples), self.image_size, self.image_size, 3)
        if array is None or array.shape != expected or array.dtype != np.uint8:
            got = None if array is None else (array.shape, array.dtype)
            raise DatasetError(f"image cache {self.cache_file} holds {got}, expected {expected} uint8; delete it")

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None  # workers re-open the memmap instead of receiving a pickled copy
        return state

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        array = self._images()
        sample = self.samples[index]
        image = np.array(array[index]) if array is not None else decode_rgb(sample, self.image_size)
        item = (torch.from_numpy(image), index)
        if self.captioner is not None:
            return (*item, self.captioner(sample))
        return item


def label_counts(samples: Iterable[Sample]) -> dict[str, dict[str, int]]:
    """Per attribute, how many samples carry each label ('' for unknown): for reports and meta.json."""
    counts: dict[str, Counter] = {a: Counter() for a in ATTRIBUTE_NAMES}
    for sample in samples:
        for attribute in ATTRIBUTE_NAMES:
            counts[attribute][sample.labels.get(attribute) or ""] += 1
    return {a: dict(sorted(c.items())) for a, c in counts.items()}

