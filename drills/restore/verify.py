"""Read-back checks of restored RBD images: whole-image sha256 and per-piece digests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

PIECE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ImageDigest:
    sha256: str
    size: int
    piece_sha256s: tuple[str, ...]  # one per PIECE_BYTES piece, to count damaged pieces

    def pieces_differing(self, other: "ImageDigest") -> int:
        """Pieces that differ (pieces only one side has count as differing)."""
        pairs = zip(self.piece_sha256s, other.piece_sha256s)
        return sum(a != b for a, b in pairs) + abs(len(self.piece_sha256s) - len(other.piece_sha256s))


def bytes_digest(data: bytes, piece_bytes: int = PIECE_BYTES) -> ImageDigest:
    view = memoryview(data)
    pieces = tuple(hashlib.sha256(view[i:i + piece_bytes]).hexdigest() for i in range(0, len(view), piece_bytes))
    return ImageDigest(hashlib.sha256(data).hexdigest(), len(data), pieces)


def rbd_image_digest(ioctx: Any, image_name: str, size: int | None = None, piece_bytes: int = PIECE_BYTES) -> ImageDigest:
    """Digest of the first `size` bytes (default: all) of an RBD image, read piece by piece."""
    import rbd

    whole = hashlib.sha256()
    pieces: list[str] = []
    with rbd.Image(ioctx, image_name, read_only=True) as image:
        size = image.size() if size is None else size
        for offset in range(0, size, piece_bytes):
            data = image.read(offset, min(piece_bytes, size - offset))
            whole.update(data)
            pieces.append(hashlib.sha256(data).hexdigest())
    return ImageDigest(whole.hexdigest(), size, tuple(pieces))
