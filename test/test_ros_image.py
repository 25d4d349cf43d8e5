"""Image message <-> BGR conversion without cv_bridge (duck-typed messages and real sensor_msgs types)."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from demoprof_ros.ros.image_conversion import (
    SUPPORTED_ENCODINGS, ImageConversionError, bgr_to_compressed, bgr_to_image_fields, compressed_to_bgr,
    image_to_bgr, wire_text,
)

from helpers_hostile import jpeg_declaring, png_declaring


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A small BGR frame whose channels all differ, so that a channel swap is visible."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(7, 11, 3), dtype=np.uint8)
    image[..., 0] = 10  # blue constant low, red varies: RGB/BGR swaps cannot cancel out
    return image


def _msg(array: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False,
         width: int | None = None) -> SimpleNamespace:
    """Message fields for `array` (H, W[, C]) or for raw rows (H, row bytes) with `width` given."""
    height, width = array.shape[0], width or array.shape[1]
    row = array.reshape(height, -1).view(np.uint8)
    if pad:
        row = np.concatenate([row, np.full((height, pad), 255, np.uint8)], axis=1)
    return SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=int(bigendian),
                           step=row.shape[1], data=row.tobytes())


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8", "bgra8", "rgba8", "mono8"])
@pytest.mark.parametrize("pad", [0, 5])
def test_roundtrip(frame: np.ndarray, encoding: str, pad: int) -> None:
    fields = bgr_to_image_fields(frame, encoding)
    assert fields["encoding"] == encoding and (fields["height"], fields["width"]) == frame.shape[:2]
    array = np.frombuffer(fields["data"], np.uint8).reshape(fields["height"], fields["step"])
    msg = _msg(array, encoding, pad=pad, width=fields["width"])
    out = image_to_bgr(msg)
    assert out.shape == frame.shape and out.dtype == np.uint8
    gray = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    expected = gray if encoding == "mono8" else frame
    np.testing.assert_array_equal(out, expected)
    assert out.flags.writeable


def test_rgb_is_swapped(frame: np.ndarray) -> None:
    rgb = frame[..., ::-1].copy()
    np.testing.assert_array_equal(image_to_bgr(_msg(rgb, "rgb8")), frame)
    # the same bytes read as bgr8 give the swapped picture
    np.testing.assert_array_equal(image_to_bgr(_msg(rgb, "bgr8")), rgb)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_16bit_endianness(encoding: str, bigendian: bool) -> None:
    values = np.arange(16 * 20, dtype=np.uint16).reshape(16, 20) * 200
    stored = values.astype(">u2" if bigendian else "<u2")
    out = image_to_bgr(_msg(stored.view(np.uint8).reshape(16, 40), encoding, bigendian=bigendian, width=20))
    assert out.shape == (16, 20, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[..., 1], (values >> 8).astype(np.uint8))
    # brightness order survives only when the bytes were read in the right order
    flat = out[..., 0].ravel().astype(int)
    assert np.all(np.diff(flat) >= 0) and flat[-1] > flat[0]


@pytest.mark.parametrize("change, message", [
    ({"encoding": "yuv422"}, "unsupported encoding 'yuv422'; supported: bgr8"),
    ({"encoding": "32FC1"}, "supported:"),
    ({"step": 11 * 3 - 1}, "step 32 is smaller than a row"),
    ({"data": b"\0" * (11 * 3 * 7 - 4)}, "expected step * height"),
    ({"data": b"\0" * (11 * 3 * 7 + 4)}, "expected step * height"),
    ({"height": 0, "width": 0, "step": 0, "data": b""}, "empty image: 0x0"),
])
def test_bad_messages_refused(frame: np.ndarray, change: dict, message: str) -> None:
    msg = _msg(frame, "bgr8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageConversionError, match=message.replace("*", r"\*").replace("(", r"\(")):
        image_to_bgr(msg)
    assert issubclass(ImageConversionError, ValueError)


def test_refusal_lists_every_supported_encoding() -> None:
    msg = SimpleNamespace(height=1, width=1, encoding="bayer_rggb8", is_bigendian=0, step=1, data=b"\0")
    with pytest.raises(ImageConversionError) as info:
        image_to_bgr(msg)
    assert all(enc in str(info.value) for enc in SUPPORTED_ENCODINGS)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_roundtrip(fmt: str) -> None:
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, 24:] = (0, 0, 255)  # right half red
    fields = bgr_to_compressed(image, fmt)
    out = compressed_to_bgr(SimpleNamespace(**fields))
    assert out.shape == image.shape
    tolerance = 0 if fmt == "png" else 12
    assert np.abs(out.astype(int) - image.astype(int))[:, :20].max() <= tolerance
    assert out[16, 40, 2] > 200 and out[16, 40, 0] < 40


@pytest.mark.parametrize("data", [b"", b"not a jpeg at all"])
def test_compressed_garbage_refused(data: bytes) -> None:
    with pytest.raises(ImageConversionError, match="compressed image"):
        compressed_to_bgr(SimpleNamespace(format="jpeg", data=data))


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((0, 4, 3), np.uint8)])
def test_writer_checks_input(bad: np.ndarray) -> None:
    with pytest.raises(ImageConversionError):
        bgr_to_image_fields(bad)
    with pytest.raises(ImageConversionError, match="cannot write encoding"):
        bgr_to_image_fields(np.zeros((2, 2, 3), np.uint8), "yuv422")


def test_real_sensor_msgs_types(frame: np.ndarray) -> None:
    """The generated message classes store data as array.array; conversion must read it without copies by field."""
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    msg = sensor_msgs.Image(**bgr_to_image_fields(frame, "rgb8"))
    np.testing.assert_array_equal(image_to_bgr(msg), frame)
    cmsg = sensor_msgs.CompressedImage(**bgr_to_compressed(frame, "png"))
    np.testing.assert_array_equal(compressed_to_bgr(cmsg), frame)


def test_core_module_does_not_import_rclpy() -> None:
    code = "import sys, demoprof_ros.ros.image_conversion, demoprof_ros.core.tracking, demoprof_ros.ros.hri; print('rclpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


# --- hostile frames: refused before decoding, with a fixed kind for the node's throttle -------------------

COMPRESSED_BOMBS = {
    "png_40000x40000": (lambda: png_declaring(40000, 40000, rows=0), "png"),
    "png_30000x30000": (lambda: png_declaring(30000, 30000, rows=4), "png"),
    "jpeg_30000x30000": (lambda: jpeg_declaring(30000, 30000), "jpeg"),
    "jpeg_8000x6000": (lambda: jpeg_declaring(8000, 6000), "jpeg"),  # 48 MP: over the 40 MP default
}


@pytest.mark.parametrize("case", list(COMPRESSED_BOMBS))
def test_compressed_bombs_refused_before_decoding(case: str) -> None:
    make, fmt = COMPRESSED_BOMBS[case]
    with pytest.raises(ImageConversionError, match="refused before decoding") as info:
        compressed_to_bgr(SimpleNamespace(format=fmt, data=make()))
    assert info.value.kind == "too_large" and "max_image_pixels" in str(info.value)


def test_compressed_pixel_limit_is_a_parameter() -> None:
    fields = bgr_to_compressed(np.zeros((40, 50, 3), np.uint8), "png")
    assert compressed_to_bgr(SimpleNamespace(**fields), max_pixels=2000).shape == (40, 50, 3)
    with pytest.raises(ImageConversionError, match="50x40 pixels, over the limit of 1,999"):
        compressed_to_bgr(SimpleNamespace(**fields), max_pixels=1999)


def test_raw_frame_pixel_limit(frame: np.ndarray) -> None:
    assert image_to_bgr(_msg(frame, "bgr8"), max_pixels=77).shape == frame.shape
    with pytest.raises(ImageConversionError, match="11x7 frame is over the limit of 76 pixels") as info:
        image_to_bgr(_msg(frame, "bgr8"), max_pixels=76)
    assert info.value.kind == "too_large"


@pytest.mark.parametrize("change, kind", [
    ({"encoding": "yuv422"}, "encoding"), ({"encoding": "x" * 5000}, "encoding"), ({"step": 1}, "step"),
    ({"data": b"\0"}, "data"), ({"height": 0}, "empty"),
])
def test_raw_faults_have_fixed_kinds(frame: np.ndarray, change: dict, kind: str) -> None:
    msg = _msg(frame, "bgr8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageConversionError) as info:
        image_to_bgr(msg)
    assert info.value.kind == kind and len(str(info.value)) < 400  # a 5000-char encoding is cut short


@pytest.mark.parametrize("value, expected", [
    ("camera_link", "camera_link"),
    ("cam\n[ERROR] [0] [profiler_node]: forged", "cam\\n[ERROR] [0] [profiler_node]: forged"),
    ("tab\tand\x1b[31mred", "tab\\tand\\x1b[31mred"),
])
def test_wire_text_escapes_control_characters(value: str, expected: str) -> None:
    assert wire_text(value) == expected and "\n" not in wire_text(value)


def test_wire_text_truncates_long_strings() -> None:
    text = wire_text("f" * 65536)
    assert len(text) < 120 and text.endswith("...(65536 chars)")
