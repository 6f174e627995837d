"""Streaming decompression with bounded output, for the codecs Cinder's chunked drivers write.

Cinder decompresses a whole object in one call (the bug's 1.86 GB buffer).  Here each codec
is driven piece by piece: input arrives in pieces read into one reused buffer and output is
written into the caller's (pooled) window with `readinto`, so memory is bounded by what the
caller reserved: the buffers, the decoder's state (`codec_needs`) and small per-call steps.
"""

from __future__ import annotations

import bz2
import zlib
from dataclasses import dataclass
from typing import Protocol

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

# Decoder state besides our own buffers, measured (RSS growth per live decoder, Python 3.11,
# Debian 12 libraries): inflate 40 KiB (32 KiB window + state); bunzip2 of a level-9 stream
# 3.5 MiB (a 4-byte tt entry per byte of a 900k block); zstd its window (probed from the
# frame header) plus ~160 KiB of context and block buffers.
ZLIB_STATE_BYTES = 64 * 1024
BZ2_STATE_BYTES = 4 * 1024 * 1024
ZSTD_STATE_OVERHEAD_BYTES = 384 * 1024
ZSTD_FRAME_HEADER_MAX_BYTES = 18

# The decoders are fed FEED_BYTES of input and asked for at most OUTPUT_STEP_BYTES of
# output per call.  CPython's zlib/bz2 collect output in blocks starting at 32 KiB and join
# them into a new bytes object (twice the output at the peak) and hand unconsumed input
# back as a copy: with these steps each call's garbage is one 32 KiB block and a <16 KiB
# tail, copied into the restore's pooled window at once.
FEED_BYTES = 16 * 1024
OUTPUT_STEP_BYTES = 32 * 1024
# bz2 is the exception: asked for 32 KiB at a time it decodes 16 MiB 3-5x slower than in one
# call (measured, Python 3.11); 1 MiB steps are as fast as one call.  Its blocks are joined,
# so a step costs twice its size at the peak.
BZ2_OUTPUT_STEP_BYTES = 1024 * 1024
DECODER_SCRATCH_BYTES = 2 * (FEED_BYTES + OUTPUT_STEP_BYTES)  # live output step + tail, and their successors
BZ2_SCRATCH_BYTES = 2 * FEED_BYTES + 2 * BZ2_OUTPUT_STEP_BYTES


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
    input_buffer_bytes: int  # the pooled input piece (0: the codec reads straight into the window)
    scratch_bytes: int  # transient objects: output steps, input tails, a store's bytes copy of a piece


def codec_needs(codec: str, piece_bytes: int, zstd_window_bytes: int = 0, *,
                store_copies_pieces: bool = False) -> CodecNeeds:
    """What decoding one object costs; `store_copies_pieces`: the store returns bytes (no read_into)."""
    if codec == "none":
        # Read straight into the output window; a store without read_into returns a bytes copy first.
        return CodecNeeds(0, 0, piece_bytes if store_copies_pieces else 0)
    copy = piece_bytes if store_copies_pieces else 0
    if codec == "zlib":
        return CodecNeeds(ZLIB_STATE_BYTES, piece_bytes, DECODER_SCRATCH_BYTES + copy)
    if codec == "bz2":
        return CodecNeeds(BZ2_STATE_BYTES, piece_bytes, BZ2_SCRATCH_BYTES + copy)
    if codec == "zstd":
        return CodecNeeds(zstd_window_bytes + ZSTD_STATE_OVERHEAD_BYTES, piece_bytes, DECODER_SCRATCH_BYTES + copy)
    raise UnknownCompressionError(f"unknown compression {codec!r}")


def zstd_window_size(frame_start: bytes, *, object_name: str = "") -> int:
    """Window size declared by a zstd frame header (the decoder needs that much)."""
    try:
        return int(zstandard.get_frame_parameters(frame_start).window_size)
    except zstandard.ZstdError as e:
        raise CorruptObjectError(f"not a zstd frame: {e}", object_name=object_name) from None


class PieceSource(Protocol):
    """A stored object read front to back into reused buffers."""

    def next_piece(self) -> memoryview:
        """The next piece (empty at the end); valid until the next call."""
        ...

    def read_into(self, view: memoryview) -> int:
        """Fill `view` with the next bytes of the object; fewer only at its end."""
        ...


class Decoder(Protocol):
    def readinto(self, out: memoryview) -> int:
        """Fill `out` with decompressed bytes; fewer only at the end of the stream."""
        ...

    def check_end(self) -> None:
        """After the last byte: CorruptObjectError for data left after the stream's end."""
        ...


def open_decoder(codec: str, source: PieceSource, *, zstd_max_window_bytes: int = 1 << 27,
                 object_name: str = "") -> Decoder:
    if codec == "none":
        return _Guarded(_RawDecoder(source), codec, object_name)
    if codec == "zlib":
        return _Guarded(_ZlibDecoder(source, object_name), codec, object_name)
    if codec == "bz2":
        return _Guarded(_Bz2Decoder(source, object_name), codec, object_name)
    if codec == "zstd":
        return _Guarded(_ZstdDecoder(source, zstd_max_window_bytes), codec, object_name)
    raise UnknownCompressionError(f"unknown compression {codec!r}", object_name=object_name)


class _Guarded:
    """Library errors become CorruptObjectError naming the object."""

    def __init__(self, inner: Decoder, codec: str, object_name: str) -> None:
        self._inner, self._codec, self._object_name = inner, codec, object_name

    def _wrap(self, e: Exception) -> CorruptObjectError:
        return CorruptObjectError(f"{self._codec} stream does not decode: {e}", object_name=self._object_name)

    def readinto(self, out: memoryview) -> int:
        try:
            return self._inner.readinto(out)
        except (zlib.error, OSError, EOFError, ValueError, zstandard.ZstdError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise self._wrap(e) from None

    def check_end(self) -> None:
        try:
            self._inner.check_end()
        except (zlib.error, OSError, EOFError, ValueError, zstandard.ZstdError) as e:
            raise self._wrap(e) from None


class _RawDecoder:
    def __init__(self, source: PieceSource) -> None:
        self._source = source

    def readinto(self, out: memoryview) -> int:
        return self._source.read_into(out)

    def check_end(self) -> None:
        pass  # the caller asked for one byte more and got none: the object ends there


class _Feeder:
    """Hands out the current piece FEED_BYTES at a time; fetches the next piece when empty."""

    def __init__(self, source: PieceSource) -> None:
        self._source = source
        self.pending = memoryview(b"")
        self.input_done = False

    def take(self, limit: int = FEED_BYTES) -> memoryview:
        if not self.pending and not self.input_done:
            self.pending = self._source.next_piece()
            self.input_done = not self.pending
        feed = self.pending[:limit]
        self.pending = self.pending[len(feed):]
        return feed

    def has_more(self) -> bool:
        if not self.pending and not self.input_done:
            self.pending = self._source.next_piece()
            self.input_done = not self.pending
        return bool(self.pending)


class _ZlibDecoder:
    def __init__(self, source: PieceSource, object_name: str) -> None:
        self._decoder = zlib.decompressobj()
        self._feeder = _Feeder(source)
        self._feed = memoryview(b"")  # the part of the last feed not yet consumed
        self._object_name = object_name

    def readinto(self, out: memoryview) -> int:
        filled, size = 0, len(out)
        decoder = self._decoder
        while filled < size and not decoder.eof:
            if not self._feed:
                self._feed = self._feeder.take()
                if not self._feed:
                    raise CorruptObjectError("zlib stream is truncated", object_name=self._object_name)
            chunk = decoder.decompress(self._feed, min(OUTPUT_STEP_BYTES, size - filled))
            # unconsumed_tail is a copy; the feed itself still holds those bytes.
            self._feed = self._feed[len(self._feed) - len(decoder.unconsumed_tail):]
            out[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

    def check_end(self) -> None:
        if not self._decoder.eof:
            raise CorruptObjectError("zlib stream is truncated", object_name=self._object_name)
        if self._feed or self._decoder.unused_data or self._feeder.has_more():
            raise CorruptObjectError("data after the end of the zlib stream", object_name=self._object_name)


class _Bz2Decoder:
    def __init__(self, source: PieceSource, object_name: str) -> None:
        self._decoder = bz2.BZ2Decompressor()
        self._feeder = _Feeder(source)
        self._object_name = object_name
        self._ended = False

    def readinto(self, out: memoryview) -> int:
        filled, size = 0, len(out)
        while filled < size and not self._ended:
            decoder = self._decoder
            if decoder.eof:
                # bz2.decompress accepts concatenated streams, so the restore must too.
                data: bytes | memoryview = decoder.unused_data or self._feeder.take()
                if not data:
                    self._ended = True
                    break
                self._decoder = decoder = bz2.BZ2Decompressor()
            elif decoder.needs_input:
                data = self._feeder.take()
                if not data:
                    raise CorruptObjectError("bz2 stream is truncated", object_name=self._object_name)
            else:
                data = b""
            chunk = decoder.decompress(data, min(BZ2_OUTPUT_STEP_BYTES, size - filled))
            out[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

    def check_end(self) -> None:
        if not self._ended and not self._decoder.eof:
            raise CorruptObjectError("bz2 stream is truncated", object_name=self._object_name)


class _ZstdFeed:
    """File-like view of a _Feeder for zstandard's stream_reader (memoryviews, no copies)."""

    def __init__(self, source: PieceSource) -> None:
        self._feeder = _Feeder(source)

    def read(self, size: int = -1) -> memoryview:
        return self._feeder.take(size if size > 0 else FEED_BYTES)


class _ZstdDecoder:
    def __init__(self, source: PieceSource, max_window: int) -> None:
        decompressor = zstandard.ZstdDecompressor(max_window_size=max_window)
        # zstandard reports neither truncation nor a missing frame end here; the caller checks
        # the output length against the metadata and the md5, which catches both.
        self._reader = decompressor.stream_reader(_ZstdFeed(source), read_size=FEED_BYTES, closefd=False)

    def readinto(self, out: memoryview) -> int:
        filled = 0
        while filled < len(out):
            n = self._reader.readinto(out[filled:])
            if not n:
                break
            filled += n
        return filled

    def check_end(self) -> None:
        pass


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
