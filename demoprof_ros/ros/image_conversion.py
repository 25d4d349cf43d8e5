"""sensor_msgs Image / CompressedImage <-> BGR ndarray, without cv_bridge.

Plain Python on purpose: the functions read the message *fields* (duck typing), so they are tested without
rclpy and the node needs no cv_bridge build (the usual stumbling block of Python ROS perception packages).
"""
from __future__ import annotations

import sys
from typing import Any

import cv2
import numpy as np

from ..core.images import MAX_PIXELS, ImageError, check_declared_size

#: encoding -> (channels, numpy dtype, cv2 conversion to BGR or None for as-is).
_ENCODINGS: dict[str, tuple[int, type, int | None]] = {
    "bgr8": (3, np.uint8, None),
    "rgb8": (3, np.uint8, cv2.COLOR_RGB2BGR),
    "mono8": (1, np.uint8, cv2.COLOR_GRAY2BGR),
    "8UC1": (1, np.uint8, cv2.COLOR_GRAY2BGR),
    "8UC3": (3, np.uint8, None),
    "bgra8": (4, np.uint8, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, np.uint8, cv2.COLOR_RGBA2BGR),
    "mono16": (1, np.uint16, None),
    "16UC1": (1, np.uint16, None),
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)
#: Encodings the reverse direction writes.
OUTPUT_ENCODINGS: tuple[str, ...] = ("bgr8", "rgb8", "mono8", "bgra8", "rgba8")


class ImageConversionError(ValueError):
    """A message that cannot be turned into a BGR frame; the text says which field is wrong.

    `kind` is a fixed category ("encoding", "size", "step", "data", "decode", "too_large", ...) chosen
    here, never taken from the message: the node throttles its log per kind.
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


def wire_text(value: Any, limit: int = 80) -> str:
    """A string from the wire made safe for one log line: control characters escaped, at most `limit` chars.

    A frame_id with a newline would otherwise forge a second log line, and a 64 KB one make a 64 KB line.
    """
    text = str(value)
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    if len(escaped) > limit:
        escaped = f"{escaped[:limit]}...({len(text)} chars)"
    return escaped


def image_to_bgr(msg: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """BGR uint8 (H, W, 3) copy of a sensor_msgs/Image (fields height, width, encoding, is_bigendian, step, data).

    Frames over `max_pixels` are refused (the same limit as compressed ones). Row padding (`step` larger
    than a row) is dropped; 16-bit data is byte-swapped when its endianness differs
    from this machine's and then reduced to 8 bits (images.to_bgr8).
    """
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    encoding = str(msg.encoding)
    if encoding not in _ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding '{wire_text(encoding, 32)}'; supported: {', '.join(SUPPORTED_ENCODINGS)}",
            "encoding")
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"empty image: {width}x{height}", "empty")
    if width * height > max_pixels:
        raise ImageConversionError(f"{width}x{height} frame is over the limit of {max_pixels:,} pixels "
                                   f"(parameter max_image_pixels)", "too_large")
    channels, dtype, conversion = _ENCODINGS[encoding]
    itemsize = np.dtype(dtype).itemsize
    row_bytes = width * channels * itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than a row of {width} px {encoding} ({row_bytes} bytes)", "step")
    if step % itemsize:
        raise ImageConversionError(f"step {step} is not a multiple of the {itemsize}-byte {encoding} sample",
                                   "step")
    data = msg.data
    size = len(data)
    if size != step * height:
        raise ImageConversionError(
            f"data has {size} bytes, expected step * height = {step} * {height} = {step * height}", "data")
    raw = np.frombuffer(data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(raw).view(dtype)
    if itemsize > 1 and bool(msg.is_bigendian) != (sys.byteorder == "big"):
        pixels = pixels.byteswap()
    pixels = pixels.reshape(height, width, channels) if channels > 1 else pixels.reshape(height, width)
    if dtype is np.uint16:
        from ..core.images import ImageError, to_bgr8  # the project's one 16-bit -> 8-bit rule

        try:
            return to_bgr8(pixels, name=f"{encoding} image")
        except ImageError as error:
            raise ImageConversionError(str(error), "pixels") from None
    if conversion is None:
        return pixels.copy()
    return cv2.cvtColor(pixels, conversion)


def compressed_to_bgr(msg: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """BGR uint8 frame from a sensor_msgs/CompressedImage (fields format, data) via OpenCV's decoder.

    The size the header declares is checked first: a 69-byte PNG may declare 40000x40000 pixels, and a
    decoder asked for that allocates gigabytes or raises. Such frames are refused like any bad frame.
    """
    data = msg.data
    fmt = wire_text(msg.format or "no format", 32)
    if len(data) == 0:
        raise ImageConversionError(f"compressed image ({fmt}) has no data", "empty")
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        check_declared_size(data if isinstance(data, bytes) else buffer.tobytes(),
                            f"compressed image ({fmt}, {len(data)} bytes)", max_pixels)
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except ImageError as error:
        too_large = "pixels, over the limit" in str(error) or "too many pixels" in str(error)
        raise ImageConversionError(f"{error} (parameter max_image_pixels)" if too_large else str(error),
                                   "too_large" if too_large else "decode") from None
    except cv2.error as error:
        raise ImageConversionError(f"OpenCV could not decode {len(data)} bytes of compressed image ({fmt}): "
                                   f"{str(error).strip().splitlines()[-1][:200]}", "decode") from None
    if image is None or image.size == 0:
        raise ImageConversionError(f"OpenCV could not decode {len(data)} bytes of compressed image ({fmt})",
                                   "decode")
    return image


def bgr_to_image_fields(image: np.ndarray, encoding: str = "bgr8") -> dict[str, Any]:
    """Fields of a sensor_msgs/Image holding a BGR uint8 frame: `Image(header=..., **fields)`."""
    image = _check_bgr(image)
    if encoding == "bgr8":
        out = image
    elif encoding == "rgb8":
        out = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif encoding == "mono8":
        out = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif encoding == "bgra8":
        out = cv2.cvtColor(image, cv2.COLOR_BGR2BGRA)
    elif encoding == "rgba8":
        out = cv2.cvtColor(image, cv2.COLOR_BGR2RGBA)
    else:
        raise ImageConversionError(f"cannot write encoding {encoding!r}; choose one of {', '.join(OUTPUT_ENCODINGS)}")
    out = np.ascontiguousarray(out)
    height, width = out.shape[:2]
    return {"height": height, "width": width, "encoding": encoding, "is_bigendian": 0,
            "step": out.strides[0], "data": out.tobytes()}


def bgr_to_compressed(image: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> dict[str, Any]:
    """Fields of a sensor_msgs/CompressedImage (`format`, `data`) holding the frame as JPEG or PNG."""
    image = _check_bgr(image)
    if fmt in ("jpeg", "jpg"):
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        fmt = "jpeg"
    elif fmt == "png":
        ok, buf = cv2.imencode(".png", image)
    else:
        raise ImageConversionError(f"cannot write compressed format {fmt!r}; choose jpeg or png")
    if not ok:
        raise ImageConversionError(f"OpenCV could not encode a {image.shape} frame as {fmt}")
    return {"format": fmt, "data": buf.tobytes()}


def _check_bgr(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ImageConversionError(f"expected a BGR uint8 (H, W, 3) array, got {type(image).__name__} {shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageConversionError(f"empty image: {image.shape[1]}x{image.shape[0]}")
    return image
