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
# A PNG header may claim any size: OpenCV's own limit (2^30 pixels) let a 20000 x 20000
# image through at 3.5 GB once converted to float; 2^26 (8192 x 8192) is far beyond
# any training image and keeps one decode under 300 MB.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2**26))

MODALITIES = ("image", "audio")
