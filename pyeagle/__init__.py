"""pyeagle: EAGLE-2 speculative decoding with dynamic draft trees on GGUF models."""
from __future__ import annotations

from ._core import ContextFullError, DraftHead, ModelFileError, Stats, Target, set_log_level
from .engine import Engine, Output, on_compute_thread

__version__ = "0.1.0"

__all__ = ["ContextFullError", "DraftHead", "Engine", "ModelFileError", "Output", "Stats", "Target",
           "on_compute_thread", "set_log_level", "__version__"]
