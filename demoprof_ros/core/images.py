"""Turning whatever a user or a camera hands us into the one frame format the core uses: BGR uint8 HxWx3.

Everything downstream (detection, crops, scoring) assumes contiguous BGR uint8, so the conversions and the
checks live here once. Bad input raises `ImageError` naming the image and what was expected; `iter_media`
turns those errors into items so that a long run over a folder or a video logs and skips a bad file instead
of stopping.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

#: Smallest accepted side in pixels. A face needs more than this to be scored at all, and smaller
#: "images" are nearly always a mistake (a 1x1 placeholder, a wrong axis order).
MIN_SIDE = 16

#: Most pixels (width x height) an encoded image may declare before it is decoded. Every camera and phone
#: sensor in common use fits (4K video 8.3 MP, phones 12-24 MP binned, DSLRs up to ~36 MP), while a hostile
#: header (a 629-byte JPEG declaring 30000x30000 = 900 MP) is refused before the decoder allocates gigabytes.
MAX_PIXELS = 40_000_000
#: Largest image file `load_image` reads, in bytes; checked from the file size before reading anything.
MAX_FILE_BYTES = 256 * 1024 * 1024

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp",
                              ".pbm", ".pgm", ".ppm", ".pnm", ".jp2"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv"})

# Decode flags: keep 16-bit depth and grayscale (to_bgr8 converts them) but let OpenCV apply the EXIF
# orientation, which IMREAD_UNCHANGED skips (phone portraits would arrive sideways and faces go unfound).
# The price is that the decoder drops an alpha channel itself - the same thing to_bgr8 does with BGRA.
_DECODE_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """An image that cannot be used, with a message naming it and what was expected."""


def to_bgr8(array: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Any supported frame -> contiguous BGR uint8 HxWx3 (the input itself when it already is one).

    Accepted: HxW or HxWx1 grayscale, HxWx3 BGR, HxWx4 BGRA (alpha dropped); uint8; uint16 (high byte,
    i.e. value // 256, so 257*k -> k); float in [0, 1] (x255, rounded); other integer types when every
    value is within 0..255. Refused with ImageError: non-arrays, non-numeric dtypes, empty arrays or
    0-size dimensions, sides below MIN_SIDE, other channel counts, floats outside [0, 1] or not finite
    (a 0..255 float image would otherwise turn silently white).
    """
    if not isinstance(array, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array (HxW or HxWxC), got {type(array).__name__}")
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer)
                                       or np.issubdtype(array.dtype, np.floating)):
        raise ImageError(f"{name}: expected a numeric image (uint8, uint16 or float in [0, 1]), "
                         f"got dtype {array.dtype}")
    if array.size == 0:
        raise ImageError(f"{name}: empty image (shape {array.shape}); expected HxW or HxWxC pixels")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ImageError(f"{name}: expected HxW, HxWx1, HxWx3 (BGR) or HxWx4 (BGRA), got shape {array.shape}")
    height, width = array.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"{name}: too small ({width}x{height}); expected at least {MIN_SIDE} px on each side")

    image = _to_uint8(array, name)
    if image.ndim == 2 or image.shape[2] == 1:
        image = cv2.cvtColor(image.reshape(height, width), cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image)


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> 8).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageError(f"{name}: float image contains NaN or infinity; expected values in [0, 1]")
        low, high = float(array.min()), float(array.max())
        if low < -1e-3 or high > 1 + 1e-3:
            raise ImageError(f"{name}: float image has values in [{low:g}, {high:g}]; expected [0, 1] "
                             "(convert 0..255 floats to uint8 first)")
        return np.clip(array.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    low, high = int(array.min()), int(array.max())  # any other integer type
    if low < 0 or high > 255:
        raise ImageError(f"{name}: {array.dtype} image has values in [{low}, {high}]; expected 0..255 "
                         "(or use uint8 / uint16)")
    return array.astype(np.uint8)


def load_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS,
               max_bytes: int = MAX_FILE_BYTES) -> np.ndarray:
    """Read an image file into BGR uint8 HxWx3 (EXIF orientation applied).

    Refused with ImageError before decoding: files over `max_bytes` (checked from their size, so a 1 GB
    sparse file is never read) and images whose header declares more than `max_pixels` (decompression
    bombs). Truncated JPEG and PNG files are refused, not half-decoded: OpenCV may return the top of a cut
    JPEG with grey below and only a warning on stderr, which would silently profile a damaged frame. A JPEG
    counts as truncated when no end-of-image marker follows its first scan; a PNG when it has no IEND chunk.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if not path.is_file():
        raise ImageError(f"{path}: not a file (expected an image file)")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(f"{path}: file of {size / 2**20:.0f} MiB is over the limit of "
                             f"{max_bytes / 2**20:.0f} MiB for an image; refused without reading it")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # bounded even if the file grew since stat()
    except OSError as error:
        raise ImageError(f"{path}: cannot read ({error.strerror or error})") from error
    if not data:
        raise ImageError(f"{path}: empty file (expected an image)")
    if len(data) > max_bytes:
        raise ImageError(f"{path}: over the limit of {max_bytes / 2**20:.0f} MiB for an image")
    check_declared_size(data, str(path), max_pixels)
    _check_complete(data, path)
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _DECODE_FLAGS)
    except cv2.error as error:
        raise ImageError(f"{path}: OpenCV cannot decode it ({str(error).strip().splitlines()[-1]})") from error
    if image is None:
        raise ImageError(f"{path}: not a decodable image (expected JPEG, PNG, BMP, TIFF, WebP, ...)")
    return to_bgr8(image, name=str(path))


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header, without decoding the pixels; None if not an image.

    Pillow reads only the header here (PNG IHDR, JPEG SOF, TIFF IFD, ...). Its own bomb check refuses
    headers above 2 * Image.MAX_IMAGE_PIXELS (~179 MP) without telling the size: that is an ImageError.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
    except Image.DecompressionBombError as error:
        raise ImageError(f"declares too many pixels to decode safely ({error})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, struct.error):
        return None
    return int(width), int(height)


def check_declared_size(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """The declared (width, height), or ImageError when unknown or over `max_pixels` (a decompression bomb)."""
    try:
        size = declared_size(data)
    except ImageError as error:
        raise ImageError(f"{name}: {error}; refused before decoding (a decompression bomb?)") from None
    if size is None:
        raise ImageError(f"{name}: not a decodable image (no image header found; expected JPEG, PNG, BMP, TIFF, "
                         "WebP, ...)")
    width, height = size
    if width * height > max_pixels:
        raise ImageError(f"{name}: declares {width}x{height} pixels, over the limit of {max_pixels:,} "
                         f"({max_pixels / 1e6:g} MP); refused before decoding (a decompression bomb?)")
    return size


def _check_complete(data: bytes, path: Path) -> None:
    if data.startswith(_JPEG_SOI):
        scan = _first_jpeg_scan(data)
        if scan is None or data.find(_JPEG_EOI, scan) < 0:
            raise ImageError(f"{path}: truncated JPEG (no end-of-image marker after the image data)")
    elif data.startswith(_PNG_SIGNATURE) and data.rfind(b"IEND") < 0:
        raise ImageError(f"{path}: truncated PNG (no IEND chunk)")


def _first_jpeg_scan(data: bytes) -> int | None:
    """Offset just after the first start-of-scan header, walking the marker segments from SOI.

    Walking by segment length skips APP1, whose EXIF thumbnail carries an end-of-image marker of its own.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers carry no length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:  # SOS
            return pos + 2 + length
        pos += 2 + length
    return None


@dataclass
class MediaItem:
    """One frame of a run: `image` (BGR uint8) or `error` (why this file or frame was skipped)."""

    source: str  # "path" for images, "path:frame" for video frames
    image: np.ndarray | None = None
    error: ImageError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class MediaSet:
    """Images, folders (recursive, sorted, image extensions only, hidden names skipped) and videos.

    Iterating yields MediaItems in order; `len()` is the number of items to expect, for a progress bar
    (exact for images; for videos it is the container's frame count, which some formats only estimate).
    Paths that do not exist or cannot be opened become error items rather than exceptions.
    """

    def __init__(self, paths: Iterable[str | os.PathLike] | str | os.PathLike, frame_stride: int = 1):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        if isinstance(frame_stride, bool) or not isinstance(frame_stride, int) or frame_stride < 1:
            raise ValueError(f"frame_stride must be an integer >= 1, got {frame_stride!r}")
        self.frame_stride = frame_stride
        self.files: list[Path] = []
        for path in map(Path, paths):
            self.files.extend(_expand_folder(path) if path.is_dir() else [path])
        self._length: int | None = None

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(self._count(path) for path in self.files)
        return self._length

    @property
    def total(self) -> int:
        """Same as len(): the number of items to expect (tqdm's `total`)."""
        return len(self)

    def _count(self, path: Path) -> int:
        if not is_video(path):
            return 1
        frames = video_frame_count(path)
        return max(1, -(-frames // self.frame_stride))  # a video that fails to open is one error item

    def __iter__(self) -> Iterator[MediaItem]:
        for path in self.files:
            if is_video(path):
                yield from _iter_video(path, self.frame_stride)
                continue
            try:
                yield MediaItem(str(path), image=load_image(path))
            except ImageError as error:
                yield MediaItem(str(path), error=error)


def iter_media(paths: Iterable[str | os.PathLike] | str | os.PathLike, frame_stride: int = 1) -> MediaSet:
    """Every image / video frame under `paths` as MediaItems; the result also has len() and `.total`."""
    return MediaSet(paths, frame_stride=frame_stride)


def is_video(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _expand_folder(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(root) / f for f in files
                     if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return sorted(found)


def video_frame_count(path: str | os.PathLike) -> int:
    """Frames the container announces (0 when unknown or unreadable)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))) if capture.isOpened() else 0
    finally:
        capture.release()


def _iter_video(path: Path, stride: int) -> Iterator[MediaItem]:
    if not path.is_file():
        yield MediaItem(str(path), error=ImageError(f"{path}: no such file"))
        return
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            yield MediaItem(str(path), error=ImageError(f"{path}: cannot open as a video (unsupported codec "
                                                        "or not a video)"))
            return
        index, produced = 0, 0
        while True:
            if index % stride == 0:
                ok, frame = capture.read()
                if not ok:
                    break
                source, produced = f"{path}:{index}", produced + 1
                try:
                    yield MediaItem(source, image=to_bgr8(frame, name=source))
                except ImageError as error:
                    yield MediaItem(source, error=error)
            elif not capture.grab():  # skipped frames are grabbed, not decoded
                break
            index += 1
        if produced == 0:
            yield MediaItem(str(path), error=ImageError(f"{path}: opened as a video but no frame could be read"))
    finally:
        capture.release()
