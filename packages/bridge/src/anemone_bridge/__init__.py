"""anemone-bridge: Hugging Face <-> Megatron-Core checkpoint conversion, any TP/PP/EP layout, verified on CPU.

Public API: `AutoBridge`, `import_ckpt`, `export_ckpt`, `verify`, `roundtrip`, `list_supported_models`.
Imports are lazy so `import anemone_bridge` stays light (no megatron-core until used).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["AutoBridge", "export_ckpt", "import_ckpt", "list_supported_models", "roundtrip", "verify"]


def __getattr__(name: str) -> Any:
    if name == "AutoBridge":
        from anemone_bridge.auto_bridge import AutoBridge

        return AutoBridge
    if name in ("import_ckpt", "export_ckpt", "verify", "roundtrip"):
        from anemone_bridge import convert

        return getattr(convert, name)
    if name == "list_supported_models":
        from anemone_bridge.architectures import list_supported_models

        return list_supported_models
    raise AttributeError(f"module 'anemone_bridge' has no attribute {name!r}")
