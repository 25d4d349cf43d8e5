"""A camera stand-in: publish an image, a folder or a video as sensor_msgs/Image or CompressedImage.

For demos and tests without a camera: `image_source photo.jpg --rate 2`, `image_source clip.mp4 --compressed`.
Frames are stamped with the node clock when sent; `--count N` stops after N frames (exit 0), otherwise the
source repeats until Ctrl-C. By default it waits a few seconds for a subscriber before the first frame, so a
short run is not lost to discovery.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from ..core.images import IMAGE_EXTENSIONS, MediaSet, is_video
from .image_conversion import OUTPUT_ENCODINGS, ImageConversionError, bgr_to_compressed, bgr_to_image_fields

SAMPLE_NAME = "obama_family_2011.jpg"
#: Still images up to this many are decoded and encoded once, then re-sent from memory.
_PRELOAD_LIMIT = 64


def default_source() -> Path:
    """The bundled sample photo: installed share folder first, then the source tree."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("demoprof_ros"))
        candidates += [share / "data" / SAMPLE_NAME, share / "test" / "data" / "group_photos" / SAMPLE_NAME]
    except Exception:  # not installed, not indexed, or AMENT_PREFIX_PATH unset: use the source tree
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "test" / "data" / "group_photos" / SAMPLE_NAME)
    for path in candidates:
        if path.is_file():
            return path
    return candidates[-1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="image_source", description=__doc__.split("\n\n")[0],
        epilog="ROS arguments go after --ros-args, e.g. --ros-args -r image:=/camera/image")
    parser.add_argument("source", nargs="?", help=f"image, folder or video (default: the sample photo {SAMPLE_NAME})")
    parser.add_argument("--topic", default="image", help="base topic (default: image; compressed: <topic>/compressed)")
    parser.add_argument("--compressed", action="store_true", help="publish sensor_msgs/CompressedImage")
    parser.add_argument("--format", default="jpeg", choices=("jpeg", "png"), help="compressed format (default jpeg)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--encoding", default="bgr8", choices=OUTPUT_ENCODINGS, help="Image encoding (default bgr8)")
    parser.add_argument("--rate", type=float, default=2.0, help="frames per second (default 2)")
    parser.add_argument("--count", type=int, default=0, help="stop after this many frames (default 0: run on)")
    parser.add_argument("--frame-id", default="camera", help="header.frame_id (default camera)")
    parser.add_argument("--reliability", default="reliable", choices=("reliable", "best_effort"),
                        help="publisher QoS (default reliable, which best-effort subscribers accept too)")
    parser.add_argument("--wait", type=float, default=5.0,
                        help="seconds to wait for subscribers before the first frame (default 5, 0: don't)")
    parser.add_argument("--subscribers", type=int, default=1,
                        help="how many subscriptions --wait waits for (default 1)")
    parser.add_argument("--verbose", action="store_true", help="log every frame sent")
    return parser


class ImageSource(Node):
    """Publishes frames from a MediaSet on a timer; `done` turns true after --count frames."""

    def __init__(self, args: argparse.Namespace, media: MediaSet) -> None:
        super().__init__("image_source")
        self.args = args
        self.sent = 0
        self.done = False
        self.failures = 0
        reliability = ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability)
        msg_type, topic = (CompressedImage, f"{args.topic}/compressed") if args.compressed else (Image, args.topic)
        self.msg_type = msg_type
        self.publisher = self.create_publisher(msg_type, topic, qos)
        self.frames = self._frames(media)
        self.waiting_since = time.monotonic()
        self.timer = self.create_timer(1.0 / args.rate, self._tick)
        self.get_logger().info(f"publishing {args.source} on {self.publisher.topic_name} "
                               f"({msg_type.__name__}) at {args.rate:g} Hz"
                               + (f", {args.count} frame(s)" if args.count else ""))

    def _encode(self, image: Any) -> dict[str, Any]:
        if self.args.compressed:
            return bgr_to_compressed(image, self.args.format, self.args.quality)
        return bgr_to_image_fields(image, self.args.encoding)

    def _frames(self, media: MediaSet) -> Iterator[tuple[str, dict[str, Any]]]:
        """Endless (source, message fields) pairs; bad files are logged and skipped."""
        stills = not any(is_video(p) for p in media.files) and len(media.files) <= _PRELOAD_LIMIT
        if stills:
            cache = [(item.source, self._encode(item.image)) for item in self._good(media)]
            if not cache:
                return
            yield from itertools.cycle(cache)
            return
        while True:
            produced = False
            for item in self._good(media):
                produced = True
                yield item.source, self._encode(item.image)
            if not produced:
                return

    def _good(self, media: MediaSet) -> Iterator[Any]:
        for item in media:
            if item.ok:
                yield item
            else:
                self.failures += 1
                self.get_logger().warning(f"skipping {item.source}: {item.error}")

    def _tick(self) -> None:
        if self.done:
            return
        if self.args.wait > 0 and self.sent == 0 and self.publisher.get_subscription_count() < self.args.subscribers:
            if time.monotonic() - self.waiting_since < self.args.wait:
                return
            self.get_logger().warning(f"{self.publisher.get_subscription_count()} of {self.args.subscribers} "
                                      f"subscriber(s) on {self.publisher.topic_name} after {self.args.wait:g} s; "
                                      "publishing anyway")
            self.args.wait = 0
        try:
            source, fields = next(self.frames)
        except StopIteration:
            self.get_logger().error("no frame could be read from the source")
            self.done = True
            return
        except ImageConversionError as exc:
            self.get_logger().error(f"cannot encode the frame: {exc}")
            self.done = True
            return
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self.args.frame_id)
        self.publisher.publish(self.msg_type(header=header, **fields))
        self.sent += 1
        if self.args.verbose:
            self.get_logger().info(f"sent #{self.sent} {source} stamp {header.stamp.sec}.{header.stamp.nanosec:09d}")
        if self.args.count and self.sent >= self.args.count:
            self.done = True


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> MediaSet:
    if args.rate <= 0:
        parser.error(f"--rate must be > 0, got {args.rate}")
    if args.subscribers < 1:
        parser.error(f"--subscribers must be >= 1, got {args.subscribers}")
    if args.count < 0:
        parser.error(f"--count must be >= 0, got {args.count}")
    if not 0 <= args.quality <= 100:
        parser.error(f"--quality must be in 0..100, got {args.quality}")
    source = Path(args.source) if args.source else default_source()
    args.source = str(source)
    if not source.exists():
        parser.error(f"{source}: no such file or folder")
    media = MediaSet(source)
    if not media.files:
        parser.error(f"{source}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) or videos found")
    return media


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(remove_ros_args(argv)[1:])
    media = _check_args(parser, args)
    code = 0
    try:
        with rclpy.init(args=argv):
            node = ImageSource(args, media)
            try:
                while rclpy.ok() and not node.done:
                    rclpy.spin_once(node, timeout_sec=0.1)
                if node.sent == 0:
                    code = 1
                elif node.args.count:
                    # Give reliable transport a moment to deliver the last frame before the participant goes.
                    deadline = time.monotonic() + 0.5
                    while rclpy.ok() and time.monotonic() < deadline:
                        rclpy.spin_once(node, timeout_sec=0.05)
                node.get_logger().info(f"sent {node.sent} frame(s)")
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return code


if __name__ == "__main__":
    sys.exit(main())
