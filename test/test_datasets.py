"""Data set reading in every layout, bad-row reporting, splits, captions and the uint8 image cache."""
import json
import random
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from demoprof_ros.training import datasets as ds
from demoprof_ros.core.prompts import PromptSet
from demoprof_ros.core.taxonomy import Description
from demoprof_ros.core.transforms import normalize_uint8


def _image(path: Path, seed: int, shape=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def images(tmp_path):
    """Four small images under tmp_path/images, one corrupt and one truncated JPEG."""
    for i in range(4):
        _image(tmp_path / "images" / f"{i}.jpg", i, shape=(40 + 4 * i, 30))
    (tmp_path / "images" / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    whole = (tmp_path / "images" / "0.jpg").read_bytes()
    (tmp_path / "images" / "truncated.jpg").write_bytes(whole[:len(whole) * 2 // 3])
    return tmp_path


CSV_GOOD = ("file,age,gender,race,caption\n"
            "images/0.jpg,20-29,Male,White,\n"
            "images/1.jpg,34,female,east asian,a person smiling\n")


@pytest.fixture
def csv_with_bad_rows(images):
    return _write(images / "data.csv", CSV_GOOD + (
        "images/2.jpg,20-29,Male,Pacific Islander,\n"  # line 4: no FairFace class
        "images/3.jpg,old,Male,White,\n"                # line 5: unknown label
        "images/missing.jpg,20-29,Male,White,\n"        # line 6: missing file
        "images/3.jpg,20-29\n"                          # line 7: missing columns
        "images/0.jpg,20-29,Male,White,\n"              # line 8: duplicate
        "\n"
        "images/3.jpg,,Female,,\n"))                    # line 10: blank = unknown, kept


def test_csv_reads_labels_and_reports_bad_rows(csv_with_bad_rows, images):
    samples, report = ds.read_dataset(csv_with_bad_rows)
    assert [s.path for s in samples] == [images / "images" / f"{i}.jpg" for i in (0, 1, 3)]
    assert samples[1].labels == {"age": "30-39", "gender": "Female", "race": "East Asian"}
    assert samples[1].caption == "a person smiling" and samples[0].caption is None
    assert samples[2].labels == {"age": None, "gender": "Female", "race": None}
    assert samples[2].where.endswith("data.csv:10")
    assert report.counts == {"label not in taxonomy": 1, "unknown label": 1, "missing file": 1,
                             "missing columns": 1, "duplicate file": 1}
    assert (report.rows, report.kept, report.skipped) == (8, 3, 5)
    where = {w.split("/")[-1]: reason for w, reason in report.problems}
    assert set(where) == {"data.csv:4", "data.csv:5", "data.csv:6", "data.csv:7", "data.csv:8"}
    assert "Pacific Islander" in where["data.csv:4"] and "missing.jpg" in where["data.csv:6"]
    summary = report.summary()
    assert "8 rows, 3 kept, 5 skipped" in summary and "data.csv:4" in summary
    assert json.loads(json.dumps(report.to_dict()))["counts"]["missing file"] == 1


def test_strict_mode_raises_on_first_bad_row(csv_with_bad_rows):
    with pytest.raises(ds.DatasetError, match=r"data\.csv:4: label not in taxonomy.*Pacific Islander"):
        ds.read_dataset(csv_with_bad_rows, strict=True)


def test_fairface_label_csv_reads_as_is(tmp_path):
    """FairFace's own fairface_label_val.csv: extra service_test column, files under val/."""
    _image(tmp_path / "val" / "1.jpg", 1)
    _image(tmp_path / "val" / "2.jpg", 2)
    csv_path = _write(tmp_path / "fairface_label_val.csv", "file,age,gender,race,service_test\n"
                      "val/1.jpg,3-9,Male,East Asian,False\nval/2.jpg,50-59,Female,Latino_Hispanic,True\n")
    samples, report = ds.read_dataset(csv_path)
    assert [s.labels["race"] for s in samples] == ["East Asian", "Latino_Hispanic"] and report.skipped == 0


@pytest.mark.parametrize("name,text,match", [
    ("empty.csv", "", "empty file"),
    ("header.csv", "file,age,gender,race\n", "no usable samples"),
    ("nofile.csv", "path,age\nimages/0.jpg,20-29\n", "lacks the columns"),
    ("onlybad.csv", "file,age,gender,race\nimages/missing.jpg,20-29,Male,White\n", "1 missing file"),
    ("empty.jsonl", "\n", "empty file"),
    ("data.txt", "file,age\n", "unsupported"),
])
def test_unusable_dataset_raises_clear_error(images, name, text, match):
    with pytest.raises(ds.DatasetError, match=match):
        ds.read_dataset(_write(images / name, text))


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(ds.DatasetError, match="not found"):
        ds.read_dataset(tmp_path / "nope.csv")
    with pytest.raises(ds.DatasetError, match="no labels.csv and no images"):
        ds.read_dataset(tmp_path)


@pytest.mark.parametrize("name,text,bad_lines", [
    ("captions.jsonl", '{"file": "images/0.jpg", "caption": "a smiling man"}\n'
                       '{"file": "images/1.jpg", "caption": "a child", "gender": "Female"}\n'
                       'not json\n'
                       '{"caption": "no file"}\n', (3, 4)),
    ("captions.csv", "file,caption\nimages/0.jpg,a smiling man\nimages/1.jpg,a child\nimages/9.jpg,gone\n"
                     "images/2.jpg\n", (4, 5)),
])
def test_caption_only_forms(images, name, text, bad_lines):
    samples, report = ds.read_dataset(_write(images / name, text))
    assert [s.caption for s in samples] == ["a smiling man", "a child"]
    assert samples[0].labels == {"age": None, "gender": None, "race": None}
    assert [w.split("/")[-1] for w, _ in report.problems] == [f"{name}:{line}" for line in bad_lines]
    if name.endswith(".jsonl"):
        assert samples[1].labels["gender"] == "Female"
        assert report.counts == {"invalid JSON": 1, "missing columns": 1}


def test_utkface_file_names(tmp_path):
    folder = tmp_path / "utk"
    _image(folder / "25_0_2_20170116174525125.jpg.chip.jpg", 0)
    _image(folder / "3_1_0_20170109191958361.jpg", 1)
    _image(folder / "61_1_20170109150557335.jpg", 2)  # a real UTKFace defect: race code missing
    _image(folder / "40_2_1_20170109150557335.jpg", 3)  # gender code 2 does not exist
    (folder / "notes.txt").write_text("ignored: not an image")
    samples, report = ds.read_dataset(folder)
    assert [s.labels for s in samples] == [
        {"age": "20-29", "gender": "Male", "race": "Asian"}, {"age": "3-9", "gender": "Female", "race": "White"}]
    assert report.counts == {"bad file name": 2}
    assert {w for w, _ in report.problems} == {"utk/61_1_20170109150557335.jpg", "utk/40_2_1_20170109150557335.jpg"}


def test_check_images_reports_corrupt_file_and_loading_names_it(images):
    csv_path = _write(images / "c.csv", CSV_GOOD + "images/corrupt.jpg,20-29,Male,White,\n"
                      "images/truncated.jpg,20-29,Male,White,\n")
    _, checked = ds.read_dataset(csv_path, check_images=True)
    assert checked.counts == {"unreadable image": 2}
    assert [w.split("/")[-1] for w, _ in checked.problems] == ["c.csv:4", "c.csv:5"]
    assert "truncated" in checked.problems[1][1]
    samples, unchecked = ds.read_dataset(csv_path)
    assert unchecked.skipped == 0
    dataset = ds.FaceImageDataset(samples, 32)
    assert dataset[1][0].shape == (32, 32, 3)
    for index, name in ((2, "corrupt"), (3, "truncated")):
        with pytest.raises(ds.DatasetError, match=rf"c\.csv:{index + 2}: cannot load image: .*{name}\.jpg"):
            dataset[index]


SHARED = [  # set, samples kept, rows skipped (Pacific Islander)
    ("fairface_val_sample", 150, 0),
    ("fairface_agegender_540", 270, 0),
    ("utkface_crop_part1", 2200, 0),
    ("sdfd_synthetic", 259, 41),
]


@pytest.mark.parametrize("name,kept,skipped", SHARED)
def test_shared_sets(shared_data, name, kept, skipped):
    samples, report = ds.read_dataset(shared_data / name)
    assert (len(samples), report.skipped, report.rows) == (kept, skipped, kept + skipped)
    counts = ds.label_counts(samples)
    if name == "fairface_val_sample":
        assert "" not in counts["race"] and len(counts["race"]) == 7
    if name == "fairface_agegender_540":
        assert counts["race"] == {"": 270} and "" not in counts["age"]
    if name == "utkface_crop_part1":
        assert {"Asian", "Others"} <= set(counts["race"])
    if name == "sdfd_synthetic":
        assert report.counts == {"label not in taxonomy": 41}
        assert all(s.caption for s in samples) and set(counts["age"]) == {"", "0-2"}


def test_shared_utkface_images_folder_reads_by_file_name(shared_data):
    by_name, report = ds.read_dataset(shared_data / "utkface_crop_part1" / "images")
    by_csv, _ = ds.read_dataset(shared_data / "utkface_crop_part1")
    assert report.skipped == 0
    assert {s.path.name: s.labels for s in by_name} == {s.path.name: s.labels for s in by_csv}


def _synthetic(n_per_stratum: dict[tuple, int]) -> list[ds.Sample]:
    samples = []
    for (gender, race, age), n in n_per_stratum.items():
        for _ in range(n):
            samples.append(ds.Sample(Path(f"/x/{len(samples)}.jpg"), {"gender": gender, "race": race, "age": age},
                                     None, f"s:{len(samples)}"))
    return samples


STRATA = {("Male", "White", "20-29"): 50, ("Female", "White", "20-29"): 30, ("Female", "Black", None): 20,
          ("Male", "Indian", "3-9"): 3, ("Female", "Indian", "3-9"): 1, ("Male", None, None): 1}


@pytest.mark.parametrize("seed,fraction", [(0, 0.2), (1, 0.2), (7, 0.5), (3, 0.1)])
def test_stratified_split(seed, fraction):
    samples = _synthetic(STRATA)
    train, val = ds.stratified_split(samples, fraction, seed)
    ids = lambda part: [s.where for s in part]  # noqa: E731
    assert not set(ids(train)) & set(ids(val))
    assert sorted(ids(train) + ids(val)) == sorted(ids(samples))
    assert len(val) == round(len(samples) * fraction)
    assert (ids(train), ids(val)) == tuple(map(ids, ds.stratified_split(samples, fraction, seed)))
    val_counts = Counter((s.labels["gender"], s.labels["race"], s.labels["age"]) for s in val)
    for key, n in STRATA.items():
        assert abs(val_counts[key] - n * fraction) < 1, key  # proportional up to rounding


def test_stratified_split_seeds_differ_and_edge_cases():
    samples = _synthetic(STRATA)
    assert ds.stratified_split(samples, 0.2, 0)[1] != ds.stratified_split(samples, 0.2, 1)[1]
    train, val = ds.stratified_split(samples[:2], 0.2)
    assert len(train) == len(val) == 1
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="val_fraction"):
            ds.stratified_split(samples, bad)
    with pytest.raises(ValueError, match="at least 2"):
        ds.stratified_split(samples[:1])


def test_fingerprint_tracks_labels_and_files(images):
    samples, _ = ds.read_dataset(_write(images / "f.csv", CSV_GOOD))
    base = ds.fingerprint(samples)
    assert base == ds.fingerprint(ds.read_dataset(images / "f.csv")[0]) and len(base) == 16
    relabelled = [ds.Sample(s.path, {**s.labels, "gender": "Female"}, s.caption, s.where) for s in samples]
    assert ds.fingerprint(relabelled) != base
    assert ds.fingerprint(samples[::-1]) != base
    _image(samples[0].path, 99, shape=(50, 50))  # file replaced
    assert ds.fingerprint(samples) != base


def test_captions_for():
    prompts, rng = PromptSet(), random.Random(0)
    own = ds.Sample(Path("a.jpg"), {"age": None, "gender": None, "race": None}, "my caption", "")
    assert ds.captions_for(own, prompts, rng) == "my caption"
    full = ds.Sample(Path("a.jpg"), {"age": "20-29", "gender": "Female", "race": "East Asian"}, None, "")
    drawn = {ds.captions_for(full, prompts, rng) for _ in range(30)}
    assert drawn == set(prompts.description_prompts(Description("20-29", "Female", "East Asian")))
    coarse = ds.Sample(Path("a.jpg"), {"age": "3-9", "gender": "Male", "race": "Asian"}, None, "")
    assert ds.captions_for(coarse, prompts) == prompts.caption(Description("3-9", "Male", None))
    assert "boy" in ds.captions_for(coarse, prompts) and "Asian" not in ds.captions_for(coarse, prompts)
    no_race = ds.captions_for(full, prompts, attributes=("age", "gender"))
    assert no_race == prompts.caption(Description("20-29", "Female", None)) and "Asian" not in no_race


def test_dataset_in_dataloader_with_captions(images):
    samples, _ = ds.read_dataset(_write(images / "d.csv", CSV_GOOD + "images/2.jpg,,Male,,\n"))
    prompts = PromptSet()
    dataset = ds.FaceImageDataset(samples, 32, captioner=lambda s: ds.captions_for(s, prompts))
    loader = DataLoader(dataset, batch_size=2, num_workers=0)
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [2, 1]
    images_batch, index, captions = batches[0]
    assert images_batch.dtype == torch.uint8 and images_batch.shape == (2, 32, 32, 3)
    assert index.tolist() == [0, 1] and captions[1] == "a person smiling"
    bgr = cv2.imread(str(samples[0].path))
    expected = cv2.cvtColor(cv2.resize(bgr, (32, round(40 * 32 / 30)), interpolation=cv2.INTER_CUBIC),
                            cv2.COLOR_BGR2RGB)
    top = (expected.shape[0] - 32) // 2
    np.testing.assert_array_equal(images_batch[0].numpy(), expected[top:top + 32])
    assert normalize_uint8(images_batch).shape == (2, 3, 32, 32)
    assert list(images.glob("*.npy")) == [] and not list(images.rglob("faces-*"))  # nothing written


def test_memmap_cache_round_trip(images, tmp_path, monkeypatch):
    samples, _ = ds.read_dataset(_write(images / "m.csv", CSV_GOOD + "images/3.jpg,,Male,,\n"))
    cache = tmp_path / "cache"
    not_written = ds.FaceImageDataset(samples, 24, cache_dir=cache, write_cache=False)
    assert not_written.cache_file is None and not cache.exists()
    direct = [ds.FaceImageDataset(samples, 24)[i][0] for i in range(len(samples))]
    first = ds.FaceImageDataset(samples, 24, cache_dir=cache)
    assert first.cache_file == ds.cache_path(cache, samples, 24) and first.cache_file.is_file()
    assert [p.name for p in cache.iterdir()] == [first.cache_file.name]  # no temp file left behind

    def no_decoding(*args, **kwargs):
        raise AssertionError("image decoded although the cache exists")

    monkeypatch.setattr(cv2, "imread", no_decoding)
    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    second = ds.FaceImageDataset(samples, 24, cache_dir=cache)
    for i, expected in enumerate(direct):
        assert torch.equal(second[i][0], expected) and second[i][1] == i
    batch, _ = next(iter(DataLoader(second, batch_size=3)))
    assert torch.equal(batch[2], direct[2])
    with pytest.raises(AssertionError, match="decoded"):
        ds.FaceImageDataset(samples, 32, cache_dir=cache)  # another size is another cache


def test_cache_build_failure_names_file_and_leaves_nothing(images, tmp_path):
    samples, _ = ds.read_dataset(_write(images / "b.csv", CSV_GOOD + "images/corrupt.jpg,,Male,,\n"))
    with pytest.raises(ds.DatasetError, match="corrupt.jpg"):
        ds.FaceImageDataset(samples, 16, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
