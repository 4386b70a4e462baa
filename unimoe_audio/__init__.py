"""UniMoE-Audio: unified speech and music generation with a Dynamic-Capacity MoE."""

from unimoe_audio.errors import UniMoEError

__version__ = "0.1.0"
__all__ = ["UniMoEError", "__version__"]
