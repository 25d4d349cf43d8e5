"""Frame conversion, image loading and media iteration: good input in every form, bad input -> ImageError."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from demoprof_ros.core.images import (
    MAX_PIXELS, MIN_SIDE, ImageError, MediaSet, check_declared_size, declared_size, iter_media, load_image, to_bgr8,
)

from helpers_hostile import jpeg_declaring, png_declaring

OBAMA = Path(__file__).parent / "data" / "group_photos" / "obama_family_2011.jpg"


def _bgr(h: int = 24, w: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- to_bgr8 ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bgr", "gray", "gray1", "bgra", "uint16", "float32", "float64", "int64"])
def test_to_bgr8_converts(kind):
    bgr = _bgr()
    gray = bgr[..., 1]
    source, expected = {
        "bgr": (bgr, bgr),
        "gray": (gray, np.repeat(gray[..., None], 3, axis=2)),
        "gray1": (gray[..., None], np.repeat(gray[..., None], 3, axis=2)),
        "bgra": (np.dstack([bgr, np.full(gray.shape, 7, np.uint8)]), bgr),
        "uint16": (bgr.astype(np.uint16) * 257, bgr),  # 257 * k is k in the high byte
        "float32": ((bgr / 255.0).astype(np.float32), bgr),
        "float64": (bgr / 255.0, bgr),
        "int64": (bgr.astype(np.int64), bgr),
    }[kind]
    out = to_bgr8(source)
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3) and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, expected)


def test_to_bgr8_uint16_uses_the_high_byte():
    image = np.full((MIN_SIDE, MIN_SIDE), 0x12FF, np.uint16)
    assert (to_bgr8(image) == 0x12).all()


def test_to_bgr8_passes_a_ready_frame_through_and_copies_a_strided_one():
    frame = _bgr()
    assert to_bgr8(frame) is frame
    view = _bgr(24, 64)[:, ::2]
    out = to_bgr8(view)
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, view)


@pytest.mark.parametrize("array, expected", [
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((0,), np.uint8), "empty"),
    (np.zeros((20, 0, 3), np.uint8), "empty"),
    (np.zeros((1, 1, 3), np.uint8), "too small"),
    (np.zeros((1, 1), np.uint8), "too small"),
    (np.zeros((MIN_SIDE - 1, 100, 3), np.uint8), "too small"),
    (np.zeros((20, 20, 2), np.uint8), "HxWx3"),
    (np.zeros((20, 20, 5), np.uint8), "HxWx3"),
    (np.zeros((400,), np.uint8), "HxWx3"),
    (np.zeros((2, 20, 20, 3), np.uint8), "HxWx3"),
    (np.zeros((20, 20, 3), bool), "numeric"),
    (np.zeros((20, 20, 3), complex), "numeric"),
    (np.full((20, 20, 3), "a", dtype=object), "numeric"),
    (np.full((20, 20, 3), 200.0), "[0, 1]"),  # a 0..255 float image
    (np.full((20, 20, 3), np.nan, np.float32), "NaN"),
    (np.full((20, 20, 3), 300, np.int32), "0..255"),
    (np.full((20, 20, 3), -1, np.int8), "0..255"),
], ids=["empty", "empty-1d", "zero-width", "1x1", "1x1-gray", "too-short", "2-channels", "5-channels", "1d",
        "4d", "bool", "complex", "object", "float-0-255", "nan", "int-over-255", "negative"])
def test_to_bgr8_refuses_with_the_name(array, expected):
    with pytest.raises(ImageError) as info:
        to_bgr8(array, name="frame 7")
    assert "frame 7" in str(info.value) and expected in str(info.value)


def test_to_bgr8_refuses_non_arrays():
    with pytest.raises(ImageError, match="numpy array"):
        to_bgr8([[1, 2], [3, 4]])


def test_min_side_is_accepted():
    assert to_bgr8(np.zeros((MIN_SIDE, MIN_SIDE), np.uint8)).shape == (MIN_SIDE, MIN_SIDE, 3)


# --- load_image ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Good and bad image files of every kind the loader must tell apart."""
    root = tmp_path_factory.mktemp("images")
    bgr = _bgr(40, 60)
    data = OBAMA.read_bytes()
    paths = {}

    def write(name: str, payload: bytes) -> None:
        paths[name] = root / name
        paths[name].write_bytes(payload)

    for name, image in [("color.png", bgr), ("gray.png", bgr[..., 0]), ("bgra.png", np.dstack([bgr, bgr[..., 0]])),
                        ("deep.png", bgr.astype(np.uint16) * 257), ("color.bmp", bgr)]:
        paths[name] = root / name
        assert cv2.imwrite(str(paths[name]), image)
    write("photo.jpg", data)
    write("trailing.jpg", data + b"\x00" * 16 + b"appended by a camera")
    write("cut_half.jpg", data[:len(data) // 2])
    write("cut_end.jpg", data[:-2])  # everything but the end-of-image marker
    write("cut_header.jpg", data[:300])
    png = paths["color.png"].read_bytes()
    write("cut.png", png[:len(png) // 2])
    write("notes.jpg", b"this is a text file, not a JPEG\n" * 10)
    write("empty.png", b"")
    paths["folder.jpg"] = root / "folder.jpg"
    paths["folder.jpg"].mkdir()
    paths["missing.jpg"] = root / "missing.jpg"
    return paths


@pytest.mark.parametrize("name, shape", [("color.png", (40, 60, 3)), ("gray.png", (40, 60, 3)),
                                         ("bgra.png", (40, 60, 3)), ("deep.png", (40, 60, 3)),
                                         ("color.bmp", (40, 60, 3)), ("photo.jpg", (427, 640, 3)),
                                         ("trailing.jpg", (427, 640, 3))])
def test_load_image_reads_every_kind_as_bgr8(files, name, shape):
    image = load_image(files[name])
    assert image.dtype == np.uint8 and image.shape == shape


@pytest.mark.parametrize("name", ["color.png", "bgra.png", "deep.png", "color.bmp"])
def test_load_image_keeps_the_pixels(files, name):
    np.testing.assert_array_equal(load_image(files[name]), _bgr(40, 60))


def test_load_image_applies_exif_orientation(tmp_path):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, to be shown rotated 90 degrees
    Image.new("RGB", (60, 30), (255, 0, 0)).save(tmp_path / "portrait.jpg", exif=exif)
    assert load_image(tmp_path / "portrait.jpg").shape == (60, 30, 3)


@pytest.mark.parametrize("name, expected", [
    ("missing.jpg", "no such file"),
    ("folder.jpg", "not a file"),
    ("empty.png", "empty file"),
    ("notes.jpg", "not a decodable image"),
    ("cut_half.jpg", "truncated JPEG"),
    ("cut_end.jpg", "truncated JPEG"),
    ("cut_header.jpg", "truncated JPEG"),
    ("cut.png", "truncated PNG"),
])
def test_load_image_refuses_with_the_path(files, name, expected):
    with pytest.raises(ImageError) as info:
        load_image(files[name])
    assert str(files[name]) in str(info.value) and expected in str(info.value)


# --- iter_media ------------------------------------------------------------------------------------------------

def test_folder_yields_good_images_and_one_error_item(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / ".hidden").mkdir()
    cv2.imwrite(str(tmp_path / "a.png"), _bgr())
    cv2.imwrite(str(tmp_path / "b" / "c.jpg"), _bgr())
    cv2.imwrite(str(tmp_path / "d.PNG"), _bgr())
    cv2.imwrite(str(tmp_path / ".hidden" / "e.png"), _bgr())
    cv2.imwrite(str(tmp_path / "._f.png"), _bgr())
    (tmp_path / "bad.jpg").write_bytes(b"not a picture")
    (tmp_path / "readme.txt").write_text("ignored: not an image extension")

    media = iter_media(tmp_path)
    assert len(media) == media.total == 4
    items = list(media)
    assert [Path(i.source).relative_to(tmp_path).as_posix() for i in items] == ["a.png", "b/c.jpg", "bad.jpg",
                                                                               "d.PNG"]
    bad = [i for i in items if not i.ok]
    assert len(bad) == 1 and bad[0].image is None and str(tmp_path / "bad.jpg") in str(bad[0].error)
    assert all(i.image.shape == (24, 32, 3) for i in items if i.ok)


def test_missing_path_is_an_error_item_not_an_exception(tmp_path):
    items = list(iter_media([tmp_path / "nope.jpg", OBAMA]))
    assert [i.ok for i in items] == [False, True]
    assert "nope.jpg" in str(items[0].error)


def _write_video(path: Path, n: int, fourcc: str) -> list[np.ndarray]:
    frames = [np.full((48, 64, 3), (i * 40, 255 - i * 40, 128), np.uint8) for i in range(n)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
    if not writer.isOpened():
        pytest.skip(f"this OpenCV build cannot write {fourcc} video")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return frames


@pytest.mark.parametrize("suffix, fourcc", [(".avi", "MJPG"), (".mp4", "mp4v")])
@pytest.mark.parametrize("stride", [1, 2])
def test_video_yields_its_frames(tmp_path, suffix, fourcc, stride):
    path = tmp_path / f"clip{suffix}"
    frames = _write_video(path, 5, fourcc)
    media = iter_media(path, frame_stride=stride)
    items = list(media)
    expected = list(range(0, 5, stride))
    assert len(media) == len(expected)
    assert [i.source for i in items] == [f"{path}:{k}" for k in expected]
    for item, k in zip(items, expected):
        assert item.ok and item.image.shape == (48, 64, 3)
        assert np.abs(item.image.astype(int) - frames[k]).mean() < 12  # lossy codecs


def test_unreadable_video_is_an_error_item(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"not a video at all")
    items = list(iter_media(tmp_path / "clip.mp4"))
    assert len(items) == 1 and not items[0].ok and "clip.mp4" in str(items[0].error)


@pytest.mark.parametrize("stride", [0, -1, 1.5, True])
def test_frame_stride_is_checked(stride):
    with pytest.raises(ValueError, match="frame_stride"):
        MediaSet([OBAMA], frame_stride=stride)


# --- hostile files: limits checked before decoding or reading ----------------------------------------------

BOMBS = {
    "png_40000x40000_65_bytes": lambda: png_declaring(40000, 40000, rows=0),
    "png_30000x30000_with_rows": lambda: png_declaring(30000, 30000, rows=4),
    "jpeg_30000x30000_629_bytes": lambda: jpeg_declaring(30000, 30000),
    "png_just_over_the_limit": lambda: png_declaring(8000, MAX_PIXELS // 8000 + 1, rows=0),
    "jpeg_just_over_the_limit": lambda: jpeg_declaring(8000, MAX_PIXELS // 8000 + 1),
}


@pytest.mark.parametrize("case", list(BOMBS))
def test_load_image_refuses_decompression_bombs_before_decoding(tmp_path, case):
    path = tmp_path / f"{case}.{'png' if case.startswith('png') else 'jpg'}"
    path.write_bytes(BOMBS[case]())
    with pytest.raises(ImageError) as info:
        load_image(path)
    text = str(info.value)
    assert text.startswith(str(path)) and "refused before decoding" in text, text


@pytest.mark.parametrize("make, size", [(lambda: png_declaring(8000, 5000), (8000, 5000)),
                                        (lambda: jpeg_declaring(7000, 5000), (7000, 5000)),
                                        (lambda: b"not an image at all", None)])
def test_declared_size_reads_the_header_only(make, size):
    assert declared_size(make()) == size


def test_pixel_limit_is_configurable(tmp_path):
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), np.zeros((100, 100, 3), np.uint8))
    assert load_image(path, max_pixels=10_000).shape == (100, 100, 3)
    with pytest.raises(ImageError, match="100x100 pixels, over the limit of 9,999"):
        load_image(path, max_pixels=9_999)
    assert check_declared_size(path.read_bytes(), "x", 10_000) == (100, 100)


def test_huge_sparse_file_refused_without_reading(tmp_path):
    path = tmp_path / "sparse.jpg"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # 1 GiB of holes: reading it whole would cost 1 GiB of memory
    with pytest.raises(ImageError, match=r"1024 MiB is over the limit of 256 MiB") as info:
        load_image(path)
    assert "without reading" in str(info.value)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(ImageError, match="over the limit"):
        load_image(small, max_bytes=100)
