"""Encoding a large value while the save transaction stores it: the pieces that are not codec-specific.

A streamed item's chunks are produced one at a time (see ``codecs.EncodedItem.stream``):
frames through :func:`statekit.frames.chunks_of`, arrays through :func:`npy_chunks`,
which cuts exactly the chunks an eager encoding would (same digests, so the two
deduplicate against each other) without building the whole ``.npy`` bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from .chunk_groups import digest_of

Chunks = Iterator[tuple[str, bytes]]


class StreamRefused(Exception):  # noqa: N818 - a signal to the store, never seen by users
    """A streamed value failed to encode part-way (the transaction rolls back); save it the eager way."""


class _HeaderDone(Exception):  # noqa: N818
    pass


class _HeaderOnly:
    """A file for ``np.lib.format.write_array`` that keeps the header (its first write) and stops there."""

    header = b""

    def write(self, data: bytes) -> None:
        self.header = bytes(data)
        raise _HeaderDone


def npy_chunks(arr: np.ndarray, chunk_bytes: int) -> Chunks:
    """The chunks ``codecs._split`` cuts from ``write_array``'s bytes, without ever holding those bytes whole."""
    sink = _HeaderOnly()
    with contextlib.suppress(_HeaderDone):
        np.lib.format.write_array(sink, arr, allow_pickle=False)  # type: ignore[arg-type]
    # write_array writes the data in memory order for Fortran arrays, in C order otherwise
    body = arr.T if arr.flags.f_contiguous and not arr.flags.c_contiguous else arr
    held: list[memoryview] = [memoryview(sink.header)]  # views of the array, not copies, when it is contiguous
    count = len(sink.header)
    for part in _c_order_parts(body):
        held.append(part)
        count += len(part)
        while count >= chunk_bytes:
            last = held[-1]
            cut = len(last) - (count - chunk_bytes)  # where the chunk ends inside the last view
            piece = b"".join([*held[:-1], last[:cut]])
            held, count = [last[cut:]], count - chunk_bytes
            yield digest_of(piece), piece
            del piece  # not held while the next one is built
    if count:
        piece = b"".join(held)
        yield digest_of(piece), piece


def _c_order_parts(arr: np.ndarray) -> Iterator[memoryview]:
    """The array's bytes in C order: views when it is contiguous, else copies of about a MiB of rows at a time."""
    if arr.ndim == 0 or arr.shape[0] == 0:
        yield memoryview(arr.tobytes())
        return
    if arr.flags.c_contiguous:
        yield memoryview(arr.reshape(-1).view(np.uint8))
        return
    step = max(1, (1 << 20) // max(1, arr[0].nbytes))
    for at in range(0, arr.shape[0], step):
        block = np.ascontiguousarray(arr[at : at + step])
        yield memoryview(block.reshape(-1).view(np.uint8))
