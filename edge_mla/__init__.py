"""edge-mla: camera + microphone classifiers trained with MLA and run on edge devices.

Importing the package imports numpy only, so the runtime extra (no torch) can use
the shared preprocessing and fusion maths.
"""

import os

__version__ = "0.1.0"

# Before anything loads cv2 (the engines' warm-up does, through the preprocessing):
# OpenCV's WARN lines and FFmpeg's own log ("[mjpeg @ 0x...] No JPEG data found")
# landed around edge-mla's one-line errors; edge-mla names those problems itself.
# Set either variable to see them again.
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

MODALITIES = ("image", "audio")
