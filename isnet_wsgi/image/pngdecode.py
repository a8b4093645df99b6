"""Decoding an uploaded PNG on two cores: one thread inflates, Pillow unfilters.

PERF: Pillow decodes a PNG on one core, and about half of that is zlib
inflating the pixel data; the other half is undoing each row's filter. Here a
second thread inflates the data piece by piece while Pillow unfilters the
pieces already inflated. Pillow reads a copy of the file in which the pixel
data is re-wrapped as *stored* deflate blocks, which its zlib copies instead
of inflating; the chunks before and after the pixel data are passed through
as they are, so the image, its mode and its info are Pillow's own. Measured on
the bench's four 1024-px PNG uploads (medians, in-process): 20-38 ms with
Pillow alone, 13-24 ms pipelined; inflate releases the GIL, and so does
Pillow's decoder.

Only a file whose layout is checked up front takes this path: a PNG that is
neither interlaced nor animated, its pixel data in consecutive IDAT chunks
that inflate to exactly the size its header declares. Anything else, and any
error on the way, answers None: the caller then decodes with Pillow alone,
which gives its own answer (and its own error for a damaged file).
"""

from __future__ import annotations

import io
import queue
import struct
import threading
import zlib

from PIL import Image

from ..runtime.parallel import submit
from .png import SIGNATURE, ZLIB_HEADER, chunk

# Samples per pixel of each PNG colour type (grey, RGB, palette, grey+alpha, RGBA).
_SAMPLES_PER_PIXEL = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Inflated bytes per piece handed to Pillow. 256 and 512 KiB measured the
# same; 64 and 128 KiB were slower (more hand-overs).
_PIECE_BYTES = 256 * 1024
# Pieces inflated ahead of Pillow: bounds the memory to a few pieces.
_PIECES_AHEAD = 4
# Smaller images are decoded by Pillow alone: two pieces are the least that overlap.
_MIN_PIXEL_DATA_BYTES = 2 * _PIECE_BYTES
# The most this path holds beside the image: the pieces queued, one being
# re-wrapped (inflated, joined, wrapped: three copies) and two held by the reader.
BUFFER_BYTES = (_PIECES_AHEAD + 5) * _PIECE_BYTES
_STORED_BLOCK_MAX_BYTES = 65535
# Seconds between checks, while a piece waits for room, that Pillow is still reading.
_HAND_OVER_POLL_S = 0.05


class _NotThisWay(Exception):
    """The file does not fit the pipelined path; Pillow alone decodes it."""


def load(data: bytes) -> Image.Image | None:
    """The PNG in ``data`` opened and loaded, or None where it takes Pillow alone."""
    try:
        layout = _Layout.read(data)
    except (_NotThisWay, struct.error):
        return None
    pieces: queue.Queue = queue.Queue(maxsize=_PIECES_AHEAD)
    reading = threading.Event()
    reading.set()
    inflater = submit(_inflate_into, layout, data, pieces, reading)
    try:
        image = Image.open(_PieceStream(data[:layout.pixels_start], pieces), formats=["PNG"])
        image.load()
        return image
    except MemoryError:
        raise
    except Exception:
        # Damaged data or a layout Pillow reads otherwise: decoded again, by Pillow alone.
        return None
    finally:
        reading.clear()
        inflater.result()  # it stops within a poll once reading is clear


class _Layout:
    """Where the pixel data lies in a PNG and how long it is once inflated."""

    def __init__(self, idat_chunks: list[tuple[int, int]], inflated_bytes: int):
        self.idat_chunks = idat_chunks        # (payload offset, length) of each IDAT
        self.inflated_bytes = inflated_bytes
        self.pixels_start = idat_chunks[0][0] - 8
        last_offset, last_length = idat_chunks[-1]
        self.pixels_end = last_offset + last_length + 4

    @classmethod
    def read(cls, data: bytes) -> _Layout:
        if data[:8] != SIGNATURE:
            raise _NotThisWay
        chunks = list(_chunks(data))
        if not chunks or chunks[0][0] != b"IHDR" or chunks[0][2] < 13:
            raise _NotThisWay
        width, height, depth, colour_type, _, _, interlace = struct.unpack_from(
            ">IIBBBBB", data, chunks[0][1])
        if interlace or colour_type not in _SAMPLES_PER_PIXEL:
            raise _NotThisWay
        kinds = [kind for kind, _, _ in chunks]
        if b"acTL" in kinds or b"IDAT" not in kinds:
            raise _NotThisWay  # animated (the frames are Pillow's), or no pixels
        first = kinds.index(b"IDAT")
        count = _run_length(kinds, first)
        if b"IDAT" in kinds[first + count:]:
            raise _NotThisWay  # IDAT chunks apart: not a valid PNG
        row_bytes = -(-width * _SAMPLES_PER_PIXEL[colour_type] * depth // 8)
        inflated_bytes = height * (1 + row_bytes)  # a filter byte, then the row
        if inflated_bytes < _MIN_PIXEL_DATA_BYTES:
            raise _NotThisWay
        return cls([(offset, length) for _, offset, length in chunks[first:first + count]],
                   inflated_bytes)


def _run_length(kinds: list[bytes], first: int) -> int:
    """How many chunks from ``first`` on are IDAT."""
    count = 0
    while first + count < len(kinds) and kinds[first + count] == b"IDAT":
        count += 1
    return count


def _chunks(data: bytes):
    """(type, payload offset, payload length) of each whole chunk, up to IEND."""
    offset = len(SIGNATURE)
    while offset + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        if offset + 12 + length > len(data):
            raise _NotThisWay  # truncated: Pillow's error, not ours
        yield kind, offset + 8, length
        if kind == b"IEND":
            return
        offset += 12 + length


def _inflate_into(layout: _Layout, data: bytes, pieces: queue.Queue,
                  reading: threading.Event) -> None:
    """Put the file after its prefix into ``pieces``, as re-wrapped IDAT chunks.

    Ends with the chunks after the pixel data and None, or with the exception
    that stopped it; returns early once Pillow stops reading.
    """
    def hand_over(item) -> bool:
        while reading.is_set():
            try:
                pieces.put(item, timeout=_HAND_OVER_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    try:
        stored = _StoredStream()
        inflater = zlib.decompressobj()
        view = memoryview(data)
        total = 0
        for offset, length in layout.idat_chunks:
            compressed = view[offset:offset + length]
            while compressed:
                inflated = inflater.decompress(compressed, _PIECE_BYTES)
                compressed = inflater.unconsumed_tail
                total += len(inflated)
                if total > layout.inflated_bytes or inflater.unused_data:
                    raise _NotThisWay  # more data than the header declares
                if inflated and not hand_over(
                        stored.idat_chunk(inflated, last=total == layout.inflated_bytes)):
                    return
        if total != layout.inflated_bytes or not inflater.eof:
            raise _NotThisWay  # truncated or damaged
        hand_over(bytes(view[layout.pixels_end:]))
        hand_over(None)
    except Exception as error:  # zlib.error for damaged data, _NotThisWay, ...
        hand_over(error)


class _StoredStream:
    """Inflated bytes as one zlib stream of stored blocks, an IDAT chunk per piece."""

    def __init__(self):
        self.started = False
        self.adler = zlib.adler32(b"")

    def idat_chunk(self, inflated: bytes, *, last: bool) -> bytes:
        parts = [] if self.started else [ZLIB_HEADER]
        self.started = True
        self.adler = zlib.adler32(inflated, self.adler)
        view = memoryview(inflated)
        for start in range(0, len(view), _STORED_BLOCK_MAX_BYTES):
            block = view[start:start + _STORED_BLOCK_MAX_BYTES]
            final = last and start + _STORED_BLOCK_MAX_BYTES >= len(view)
            parts += [struct.pack("<BHH", final, len(block), len(block) ^ 0xFFFF), block]
        if last:
            parts.append(struct.pack(">I", self.adler))
        return chunk(b"IDAT", b"".join(parts))


class _PieceStream(io.RawIOBase):
    """A read-only file of ``head`` and then the pieces, as the inflater hands them over.

    Seeks go anywhere in the bytes still held: Pillow only seeks back into
    the head (to try the signature) and forwards.
    """

    def __init__(self, head: bytes, pieces: queue.Queue):
        super().__init__()
        self._held = head
        self._held_from = 0     # file offset of self._held[0]
        self._position = 0
        self._pieces = pieces
        self._ended = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise OSError("only seeks from the start or the current position")
        if offset < self._held_from:
            raise OSError("cannot seek back past what was dropped")
        self._position = offset
        return offset

    def read(self, size: int = -1) -> bytes:
        end = self._position + size if size is not None and size >= 0 else None
        self._hold_until(end)
        start = self._position - self._held_from
        chunk = self._held[start:None if end is None else end - self._held_from]
        self._position += len(chunk)
        return bytes(chunk)

    def _hold_until(self, end: int | None) -> None:
        while not self._ended and (end is None or self._held_from + len(self._held) < end):
            piece = self._pieces.get()
            if isinstance(piece, Exception):
                self._ended = True
                raise piece
            if piece is None:
                self._ended = True
                return
            # Drop what was read already; keep the rest.
            read = max(0, min(self._position - self._held_from, len(self._held)))
            self._held = self._held[read:] + piece
            self._held_from += read
