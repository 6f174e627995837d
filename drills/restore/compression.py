"""Streaming decompression with bounded output, for the codecs Cinder's chunked drivers write.

Cinder decompresses a whole object in one call (the bug's 1.86 GB buffer).  Here each codec
is driven piece by piece: input arrives in pieces of at most `piece_bytes` and output leaves
in windows of at most `window_bytes`, so memory is bounded by what the caller reserved.
"""

from __future__ import annotations

import bz2
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import zstandard

from drills.restore.errors import CorruptObjectError, UnknownCompressionError

# Names Cinder accepts for backup_compression_algorithm, lower-cased, and what they mean.
CODEC_ALIASES: dict[str, str] = {
    "none": "none",
    "off": "none",
    "no": "none",
    "zlib": "zlib",
    "gzip": "zlib",
    "bz2": "bz2",
    "bzip2": "bz2",
    "zstd": "zstd",
}

# Decoder state besides our own buffers, from the libraries' documented needs:
# inflate keeps a 32 KiB window plus ~7 KiB state; bunzip2 needs 100k + 4 x 900k block size;
# zstd needs its window (probed from the frame header) plus two 128 KiB block buffers.
ZLIB_STATE_BYTES = 64 * 1024
BZ2_STATE_BYTES = 4 * 1024 * 1024
ZSTD_STATE_OVERHEAD_BYTES = 384 * 1024
ZSTD_FRAME_HEADER_MAX_BYTES = 18


def canonical_codec(name: str | None, *, object_name: str = "") -> str:
    """'zlib' | 'bz2' | 'zstd' | 'none' for a metadata 'compression' value."""
    if name is None:
        return "none"  # metadata written by very old Cinder stores null for uncompressed
    if not isinstance(name, str) or name.lower() not in CODEC_ALIASES:
        raise UnknownCompressionError(f"unknown compression {name!r}", object_name=object_name)
    return CODEC_ALIASES[name.lower()]


@dataclass(frozen=True)
class CodecNeeds:
    """Memory one object's decoding needs besides output windows."""

    state_bytes: int  # decoder-internal state
    input_bytes: int  # our input piece plus any copy the library makes of unconsumed input


def codec_needs(codec: str, piece_bytes: int, zstd_window_bytes: int = 0) -> CodecNeeds:
    if codec == "none":
        return CodecNeeds(0, 0)  # the input piece is the output window
    if codec == "zlib":
        # decompress(max_length=...) returns the unconsumed input as a new bytes object
        # (unconsumed_tail) while the piece it came from is still alive: 2 pieces.
        return CodecNeeds(ZLIB_STATE_BYTES, 2 * piece_bytes)
    if codec == "bz2":
        # BZ2Decompressor copies unconsumed input into its own buffer: 2 pieces.
        return CodecNeeds(BZ2_STATE_BYTES, 2 * piece_bytes)
    if codec == "zstd":
        # stream_reader holds one read_size piece at a time.
        return CodecNeeds(zstd_window_bytes + ZSTD_STATE_OVERHEAD_BYTES, piece_bytes)
    raise UnknownCompressionError(f"unknown compression {codec!r}")


def zstd_window_size(frame_start: bytes, *, object_name: str = "") -> int:
    """Window size declared by a zstd frame header (the decoder needs that much)."""
    try:
        return int(zstandard.get_frame_parameters(frame_start).window_size)
    except zstandard.ZstdError as e:
        raise CorruptObjectError(f"not a zstd frame: {e}", object_name=object_name) from None


def decode_windows(
    codec: str,
    read_piece: Callable[[], bytes],
    window_bytes: int,
    *,
    piece_bytes: int,
    zstd_max_window_bytes: int = 1 << 27,
    object_name: str = "",
) -> Iterator[bytes]:
    """Yield the decompressed stream in windows of at most `window_bytes`.

    `read_piece()` returns the next piece of the stored object and b"" at its end.
    Raises CorruptObjectError for undecodable, truncated or trailing-garbage input.
    """
    try:
        if codec == "none":
            while piece := read_piece():
                yield piece
        elif codec == "zlib":
            yield from _zlib_windows(read_piece, window_bytes, object_name)
        elif codec == "bz2":
            yield from _bz2_windows(read_piece, window_bytes, object_name)
        elif codec == "zstd":
            yield from _zstd_windows(read_piece, window_bytes, piece_bytes, zstd_max_window_bytes)
        else:
            raise UnknownCompressionError(f"unknown compression {codec!r}", object_name=object_name)
    except (zlib.error, OSError, EOFError, ValueError, zstandard.ZstdError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise CorruptObjectError(f"{codec} stream does not decode: {e}", object_name=object_name) from None


def _zlib_windows(read_piece: Callable[[], bytes], window_bytes: int, object_name: str) -> Iterator[bytes]:
    decoder = zlib.decompressobj()
    pending = b""
    input_done = False
    while not decoder.eof:
        if not pending and not input_done:
            pending = read_piece()
            input_done = not pending
        out = decoder.decompress(pending, window_bytes)
        pending = decoder.unconsumed_tail
        if out:
            yield out
        elif input_done and not pending:
            raise CorruptObjectError("zlib stream is truncated", object_name=object_name)
    if pending or decoder.unused_data or (not input_done and read_piece()):
        raise CorruptObjectError("data after the end of the zlib stream", object_name=object_name)


def _bz2_windows(read_piece: Callable[[], bytes], window_bytes: int, object_name: str) -> Iterator[bytes]:
    decoder = bz2.BZ2Decompressor()
    input_done = False
    while True:
        if decoder.eof:
            # bz2.decompress accepts concatenated streams, so the restore must too.
            rest = decoder.unused_data
            if not rest and not input_done:
                rest = read_piece()
                input_done = not rest
            if not rest:
                return
            decoder = bz2.BZ2Decompressor()
            data = rest
        elif decoder.needs_input:
            data = b"" if input_done else read_piece()
            if not data:
                raise CorruptObjectError("bz2 stream is truncated", object_name=object_name)
        else:
            data = b""
        out = decoder.decompress(data, window_bytes)
        if out:
            yield out


class _PieceSource:
    """File-like view of read_piece() for zstandard's stream_reader."""

    def __init__(self, read_piece: Callable[[], bytes]) -> None:
        self._read_piece = read_piece

    def read(self, _size: int = -1) -> bytes:
        return self._read_piece()


def _zstd_windows(
    read_piece: Callable[[], bytes], window_bytes: int, piece_bytes: int, max_window: int
) -> Iterator[bytes]:
    decompressor = zstandard.ZstdDecompressor(max_window_size=max_window)
    # zstandard reports neither truncation nor a missing frame end here; the caller checks
    # the output length against the metadata and the md5, which catches both.
    with decompressor.stream_reader(_PieceSource(read_piece), read_size=piece_bytes, closefd=False) as reader:
        while out := reader.read(window_bytes):
            yield out


def decompress_whole(body: bytes, compression: str | None) -> bytes:
    """The pre-fix restore loop's way (the benchmarks' naive baseline): the whole object at once.

    Holds the compressed and the decompressed object together - what Cinder bug 1865011 paid
    per restore. The engine never calls this.
    """
    import bz2
    import zlib

    import zstandard

    algorithm = (compression or "none").lower()
    if algorithm in ("zlib", "gzip"):
        return zlib.decompress(body)
    if algorithm in ("bz2", "bzip2"):
        return bz2.decompress(body)
    if algorithm == "zstd":
        return zstandard.ZstdDecompressor().decompress(body)
    return body
