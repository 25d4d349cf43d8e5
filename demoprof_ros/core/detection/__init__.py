"""Face detection behind one interface, and the face crops the scorer sees.

Three back-ends, best first: insightface SCRFD (accurate, 5 landmarks, needs the insightface pack),
OpenCV YuNet (small, 5 landmarks, needs one onnx file) and OpenCV's Haar cascade (ships with OpenCV, so
there is always a detector, but it misses turned faces and gives no landmarks). `build_detector` walks a
chain of them and says which it picked and why the earlier ones were not available, so a robot that
silently runs on Haar is visible in the log.

Every back-end shares the same post-processing (FaceDetector.detect): frames larger than `max_side` are
detected on a downscaled copy (the cost of Haar grows with pixels; SCRFD/YuNet resize anyway) and boxes
are scaled back, clipped to the frame, filtered by score and `min_face_size`, sorted largest first and
cut to `max_faces`.

Model files are looked up where `demoprof models fetch insightface` / `yunet` put them (model_zoo.ASSETS)
under the models directory (models.default_models_dir()): buffalo_l/det_10g.onnx and
face_detection_yunet_2023mar.onnx. Other insightface packs (a folder holding det_*.onnx or scrfd*.onnx,
e.g. buffalo_s/) and other YuNet releases (face_detection_yunet*.onnx) there are found as well.
"""
from .base import DEFAULT_MAX_SIDE, DetectorUnavailable, FaceDetector, onnx_providers
from .chain import DEFAULT_CHAIN, available_backends, build_detector, register_detector
from .crop import ARCFACE_TEMPLATE_112, alignment_matrix, alignment_template, crop_face
from .haar import HAAR_CASCADE, HaarDetector, haar_cascade_path
from .scrfd import ScrfdDetector, find_scrfd
from .yunet import YuNetDetector, find_yunet

__all__ = ["ARCFACE_TEMPLATE_112", "DEFAULT_CHAIN", "DEFAULT_MAX_SIDE", "HAAR_CASCADE", "DetectorUnavailable",
           "FaceDetector", "HaarDetector", "ScrfdDetector", "YuNetDetector", "alignment_matrix",
           "alignment_template", "available_backends", "build_detector", "register_detector", "crop_face", "find_scrfd", "find_yunet", "haar_cascade_path",
           "onnx_providers"]
