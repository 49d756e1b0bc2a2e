"""Backends the sampler drives, one module per family beside the contract they all keep (protocols):
Hone's own denoiser (hone, its causal context stream in stream) and third-party diffusion LMs loaded through
transformers (hf, their logit conventions in style)."""

from .hf import LLADA_MASK_ID, HFBackend
from .hone import HoneBackend
from .protocols import CanvasBackend, DraftTable, Network, Session, StreamBackend, TokenPrefixes
from .stream import SAVED_STREAMS, SWITCH_SHARED, ContextStream
from .style import STYLES, detect_style, shift_sources

__all__ = [
    "CanvasBackend", "ContextStream", "DraftTable", "HFBackend", "HoneBackend", "LLADA_MASK_ID", "Network",
    "SAVED_STREAMS", "STYLES", "SWITCH_SHARED", "Session", "StreamBackend", "TokenPrefixes", "detect_style",
    "shift_sources",
]
