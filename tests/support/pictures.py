"""Pictures made in memory, for the thumbnail bot to render."""

from __future__ import annotations

import io

from PIL import Image


def jpeg(width: int = 1600, height: int = 1200, colour: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "JPEG", quality=85)
    return out.getvalue()
