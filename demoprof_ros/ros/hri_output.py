"""ROS4HRI (REP-155) output of the profiler node with the typed hri_msgs messages.

  /humans/faces/tracked               hri_msgs/IdsList                      every processed frame
  /humans/faces/<id>/roi              hri_msgs/NormalizedRegionOfInterest2D each face seen in the frame
  /humans/faces/<id>/softbiometrics   hri_msgs/SoftBiometrics               each face seen in the frame

All stamped with the source image's header. QoS: reliable, volatile, keep last 1: libhri's HRIListener (and
`ros2 topic echo`) subscribe with the system defaults (reliable, volatile), which a reliable publisher serves,
and only the newest state of a face matters. A face's publishers go when its track ends, so that
`ros2 topic list` shows the faces present. Absolute topic names: REP-155 puts every face under one global
/humans namespace, whatever the node's namespace; ids carry a per-profiler session token (hri.face_id_str).
"""
from __future__ import annotations

from typing import Any, Sequence

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from . import hri
from ..core.results import FaceProfile

QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                 durability=DurabilityPolicy.VOLATILE)


def import_hri_msgs() -> tuple[Any, Any, Any] | None:
    """(IdsList, NormalizedRegionOfInterest2D, SoftBiometrics), or None where hri_msgs is not installed."""
    try:
        from hri_msgs.msg import IdsList, NormalizedRegionOfInterest2D, SoftBiometrics
    except ImportError:
        return None
    return IdsList, NormalizedRegionOfInterest2D, SoftBiometrics


class HriOutput:
    """Publishes a frame's tracked faces the ROS4HRI way (see the module doc)."""

    def __init__(self, node: Node, types: tuple[Any, Any, Any], session: str | None = None) -> None:
        self.node = node
        self.ids_type, self.roi_type, self.softbio_type = types
        self.session = session or hri.new_session()
        self.tracked = node.create_publisher(self.ids_type, f"{hri.FACES_TOPIC}/tracked", QOS)
        self.faces: dict[int, tuple[Any, Any]] = {}  # track id -> (roi, softbiometrics) publishers

    def publish(self, header: Any, profiles: Sequence[FaceProfile], alive: Sequence[int],
                image_size: tuple[int, int]) -> None:
        """`alive`: the tracker's confirmed track ids (also those missed this frame); `image_size` (w, h)."""
        self.tracked.publish(self.ids_type(header=header, ids=[hri.face_id_str(i, self.session) for i in alive]))
        for face_id in set(self.faces) - set(alive):
            for pub in self.faces.pop(face_id):
                self.node.destroy_publisher(pub)
        for profile in profiles:
            if profile.face_id is None:
                continue
            pubs = self.faces.get(profile.face_id)
            if pubs is None:
                pubs = tuple(self.node.create_publisher(kind, hri.face_topic(profile.face_id, leaf, self.session),
                                                        QOS)
                             for kind, leaf in ((self.roi_type, "roi"), (self.softbio_type, "softbiometrics")))
                self.faces[profile.face_id] = pubs
            pubs[0].publish(self.roi_type(header=header, **hri.normalized_roi(profile, image_size)))
            pubs[1].publish(self.softbio_type(header=header, **hri.softbiometrics(profile)))

    def destroy(self) -> None:
        for pubs in self.faces.values():
            for pub in pubs:
                self.node.destroy_publisher(pub)
        self.faces.clear()
        self.node.destroy_publisher(self.tracked)
