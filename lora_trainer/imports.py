"""One lock for importing the heavy libraries from threads. transformers' lazy modules are not safe to
import from two threads at once (the standalone app's Captions page counting tokens while a Review grid
loads its diffusers pipeline failed with "Failed to import transformers.models.clip")."""

import threading

HEAVY_IMPORTS = threading.RLock()
