"""Packing a frame's leaves into Arrow IPC chunks, and reading them back validated.

Consecutive leaves of one length share a chunk up to about GROUP_BYTES; the cut
points depend on types and lengths only, so equal content always packs alike.
Each group is cut every 65,536 rows. Reading checks every chunk against the
stored schema (field types), Arrow's full validation and the descriptor's
lengths, and hands leaves out one chunk at a time so little is held at once.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pyarrow as pa

ROWS_PER_CHUNK = 65_536
READ_BATCH = 64
"""Chunks fetched per query while decoding: bounds the compressed bytes held at once."""
ChunkReader = Callable[[list[str]], dict[str, bytes]]


def digest_of(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


_IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
"""LZ4 costs little CPU and cuts the bytes written (and fsynced) by a third or more."""


def _chunk_ipc(arrays: list[pa.Array]) -> bytes:
    sink = pa.BufferOutputStream()
    schema = pa.schema([pa.field(str(i), a.type) for i, a in enumerate(arrays)])
    with pa.ipc.new_stream(sink, schema, options=_IPC_OPTIONS) as writer:
        writer.write_batch(pa.record_batch(arrays, schema=schema))
    return sink.getvalue().to_pybytes()


def read_ipc(data: bytes, ftype: pa.DataType) -> list[pa.Array]:
    """The arrays of a one-field chunk (format 1)."""
    return [cols[0] for cols in read_group(data, [ftype])]


def read_group(data: bytes, types: list[pa.DataType]) -> list[list[pa.Array]]:
    """The batches of one chunk, refused unless its fields have exactly ``types`` and it validates in full."""
    reader = pa.ipc.open_stream(pa.py_buffer(data))
    if reader.schema.types != types:
        raise ValueError(f"a chunk holds {reader.schema.types}, its schema says {types}")
    out = []
    for batch in reader:
        batch.validate(full=True)
        out.append(batch.columns)
    return out


GROUP_BYTES = 256 * 1024
"""Leaves are packed into one chunk up to about this many bytes, so a wide frame is a few chunks, not one per column."""


def _nominal_width(t: pa.DataType) -> int:
    """Bytes per value used to plan groups: from the type alone, so equal types always group alike."""
    try:
        return max(1, t.bit_width // 8)
    except ValueError:
        return 16


def plan_groups(leaves: list[pa.Array | pa.ChunkedArray]) -> list[tuple[int, int]]:
    """Runs of consecutive leaves of one length, cut at GROUP_BYTES of nominal size.

    The cut points depend on types and lengths only, never on values: a changed
    cell changes one chunk, and an appended row only the last chunk of each group.
    """
    groups: list[tuple[int, int]] = []
    first, size = 0, 0
    for i, leaf in enumerate(leaves):
        n = len(leaf)
        width = min(n, ROWS_PER_CHUNK) * _nominal_width(leaf.type)
        if i > first and (n != len(leaves[first]) or size + width > GROUP_BYTES):
            groups.append((first, i - first))
            first, size = i, 0
        size += width
    if leaves:
        groups.append((first, len(leaves) - first))
    return groups


def encode_group(work: tuple[int, list[pa.Array | pa.ChunkedArray]]) -> list[tuple[str, bytes]]:
    """A group's chunks, one per ROWS_PER_CHUNK rows."""
    _, members = work
    return [encode_piece((members, start)) for start in row_starts(len(members[0]))]


def row_starts(rows: int) -> range:
    """Where a group's chunks start (an empty group still has one, empty, chunk)."""
    return range(0, max(rows, 1), ROWS_PER_CHUNK)


def encode_piece(work: tuple[list[pa.Array | pa.ChunkedArray], int]) -> tuple[str, bytes]:
    """One chunk: ROWS_PER_CHUNK rows of a group's leaves from ``start``, validated, as LZ4 Arrow IPC."""
    members, start = work
    pieces = []
    for leaf in members:
        piece = leaf.slice(start, ROWS_PER_CHUNK)
        if isinstance(piece, pa.ChunkedArray):
            piece = piece.combine_chunks() if piece.num_chunks else pa.array([], type=leaf.type)
        if not pa.types.is_primitive(piece.type):  # one layout per content, however the input was sliced
            piece = pa.concat_arrays([piece, pa.array([], type=piece.type)])
        try:
            piece.validate(full=True)  # what the loader would refuse is never written
        except pa.ArrowInvalid as exc:
            raise TypeError(f"Arrow data of type {leaf.type} that does not validate ({exc})") from None
        pieces.append(piece)
    data = _chunk_ipc(pieces)
    return digest_of(data), data


class NumpyLeaf:
    """A strided numpy column as a leaf, converted to Arrow a chunk at a time (``pa.array`` would copy it whole).

    It answers what grouping and encoding ask of a leaf: type, length, size and ``slice``.
    """

    def __init__(self, values: Any):
        self.values = values
        self.type = pa.array(values[:0]).type
        self.nbytes = values.nbytes

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, start: int, length: int) -> pa.Array:
        return pa.array(self.values[start : start + length])


class Groups:
    """Decodes chunk groups as their leaves are asked for, a batch of queries at a time, keeping little.

    Each group's chunks are read, checked (field types, full validation, lengths)
    and split into its leaves; a leaf is handed out once, then forgotten.
    """

    def __init__(self, desc: Mapping[str, Any], schema: pa.Schema, read: ChunkReader):
        self.read = read
        self.groups: list[tuple[int, int, int, list[str]]] = []
        self.group_of: dict[int, int] = {}
        for g, (first, count, length, digests) in enumerate(desc["groups"]):
            first, count, length = int(first), int(count), int(length)
            if count < 1 or length < 0 or first != sum(c for _, c, _, _ in self.groups):
                raise ValueError("the descriptor's chunk groups do not tile its leaves")
            self.groups.append((first, count, length, [str(d) for d in digests]))
            self.group_of.update((i, g) for i in range(first, first + count))
        if len(self.group_of) != len(schema):
            raise ValueError("the descriptor and the schema disagree on the number of leaves")
        self.schema = schema
        self.uses = Counter(d for *_, digests in self.groups for d in digests)
        self.held: dict[str, bytes] = {}
        self.bytes_read = 0
        self.open: dict[int, dict[int, pa.ChunkedArray]] = {}

    def length(self, leaf: int) -> int:
        return self.groups[self.group_of[leaf]][2]

    def type(self, leaf: int) -> pa.DataType:
        self.group_of[leaf]  # noqa: B018 - a KeyError for a leaf the descriptor does not have
        return self.schema.field(leaf).type

    def _stream(self, g: int) -> Iterator[bytes]:
        """The group's chunks in order, fetched READ_BATCH at a time and forgotten once handed out."""
        digests = self.groups[g][3]
        for at, d in enumerate(digests):
            if d not in self.held:
                batch = list(dict.fromkeys(x for x in digests[at : at + READ_BATCH] if x not in self.held))
                for *_, later in self.groups[g + 1 :]:
                    if len(batch) >= READ_BATCH:
                        break
                    batch.extend(x for x in later if x not in batch and x not in self.held)
                got = self.read(batch)
                self.bytes_read += sum(map(len, got.values()))
                self.held.update(got)
            data = self.held[d]
            self.uses[d] -= 1
            if self.uses[d] <= 0:
                del self.held[d]
            yield data

    def _types(self, g: int) -> list[pa.DataType]:
        first, count, _, _ = self.groups[g]
        return [self.schema.field(j).type for j in range(first, first + count)]

    def pieces(self, i: int) -> Iterator[pa.Array]:
        """A leaf's arrays one chunk at a time (a leaf alone in its group is never held whole as Arrow data)."""
        g = self.group_of[i]
        first, count, length, _ = self.groups[g]
        if count > 1 or g in self.open:
            yield from self.leaf(i).chunks
            return
        total = 0
        types = self._types(g)
        for data in self._stream(g):
            for columns in read_group(data, types):
                total += len(columns[0])
                if total > length:
                    raise ValueError(f"leaf {i} holds more values than the descriptor says ({length})")
                yield columns[0]
        if total != length:
            raise ValueError(f"leaf {i} holds {total} values, the descriptor says {length}")

    def leaf(self, i: int) -> pa.ChunkedArray:
        g = self.group_of[i]
        if g not in self.open:
            first, count, length, _ = self.groups[g]
            types = self._types(g)
            pieces: list[list[pa.Array]] = [[] for _ in range(count)]
            for data in self._stream(g):
                for columns in read_group(data, types):
                    for k, col in enumerate(columns):
                        pieces[k].append(col)
            arrays = {}
            for k in range(count):
                arr = pa.chunked_array(pieces[k], type=types[k])
                if len(arr) != length:
                    raise ValueError(f"leaf {first + k} holds {len(arr)} values, the descriptor says {length}")
                arrays[first + k] = arr
            self.open[g] = arrays
        arr = self.open[g].pop(i)
        if not self.open[g]:
            del self.open[g]
        return arr
