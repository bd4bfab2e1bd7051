"""edge-mla: camera + microphone classifiers trained with MLA and run on edge devices.

Importing the package imports numpy only, so the runtime extra (no torch) can use
the shared preprocessing and fusion maths.
"""

__version__ = "0.1.0"

MODALITIES = ("image", "audio")
