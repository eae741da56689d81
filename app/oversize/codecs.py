"""Compression codecs for oversized payloads, named in a header (zstd, lz4, gzip).

Decompression is bounded by the size the producer declared, so a small record can never
expand into an unbounded buffer."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import lz4.frame
import zstandard

CODECS = ("zstd", "lz4", "gzip")
SAMPLE_CHUNK = 64 * 1024
SAMPLE_CHUNKS = 4


class CodecError(ValueError):
    """Unknown codec, corrupt data, or output larger than declared."""


def _zstd(data: bytes | bytearray | memoryview) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_checksum=True,
                                    write_content_size=True).compress(data)


def _lz4(data: bytes | bytearray | memoryview) -> bytes:
    return lz4.frame.compress(data, content_checksum=True, store_size=True)


def _gzip(data: bytes | bytearray | memoryview) -> bytes:
    return gzip.compress(bytes(data) if isinstance(data, memoryview) else data,
                         compresslevel=6, mtime=0)


_COMPRESS: dict[str, Callable[[bytes | bytearray | memoryview], bytes]] = {
    "zstd": _zstd, "lz4": _lz4, "gzip": _gzip}


def compress(codec: str, data: bytes | bytearray | memoryview) -> bytes:
    try:
        return _COMPRESS[codec](data)
    except KeyError:
        raise CodecError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})") from None


def decompress(codec: str, data: bytes | bytearray | memoryview, size: int) -> bytes:
    """The original bytes, which must be exactly `size` long (the size the producer
    declared); CodecError if corrupt, truncated or longer."""
    max_size = size
    try:
        if codec == "zstd":
            with zstandard.ZstdDecompressor().stream_reader(data) as reader:
                out = reader.read(max_size + 1)
        elif codec == "lz4":
            decompressor = lz4.frame.LZ4FrameDecompressor()
            out = decompressor.decompress(data, max_length=max_size + 1)
        elif codec == "gzip":
            inflater = zlib.decompressobj(wbits=31)
            out = inflater.decompress(data, max_size + 1)
        else:
            raise CodecError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
    except CodecError:
        raise
    except Exception as exc:  # each library raises its own error type for corrupt input
        raise CodecError(f"{codec} data is corrupt: {exc}") from exc
    if len(out) > size:
        raise CodecError(f"{codec} data expands beyond the declared {size} bytes")
    if len(out) < size:
        raise CodecError(f"{codec} data is truncated: {len(out)} of the declared {size} bytes")
    return out


def is_sampled(size: int) -> bool:
    """Whether a payload is large enough that a sample says more cheaply how it compresses."""
    return size > SAMPLE_CHUNK * SAMPLE_CHUNKS


def sample(data: bytes | bytearray | memoryview) -> bytes:
    """A few evenly spaced slices of a large payload, to estimate how well it compresses
    without compressing all of it."""
    view = memoryview(data)
    if not is_sampled(len(view)):
        return bytes(view)
    step = (len(view) - SAMPLE_CHUNK) // (SAMPLE_CHUNKS - 1)
    return b"".join(bytes(view[i * step:i * step + SAMPLE_CHUNK]) for i in range(SAMPLE_CHUNKS))


def estimated_size(codec: str, data: bytes | bytearray | memoryview) -> int:
    """Compressed size of the whole, extrapolated from the sample's ratio."""
    probe = sample(data)
    if not probe:
        return 0
    ratio = len(compress(codec, probe)) / len(probe)
    return int(ratio * len(data))
