"""C2SP tlog-tiles v0.1.0: tile coordinates, paths, tile and entry-bundle contents.

A tile at level L, index N holds the hashes of the tree nodes at height 8·L
with indexes N·256 … N·256+W−1 (W = 256 for a full tile). Node ids follow
``exchange.audit.proof`` (level, index); :func:`hashes_from_tiles` turns a
tile reader into the node-hash getter proofs need, so proofs, roots and
mirrors all run from the standard static read API.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from exchange.audit.proof import HashGetter, NodeId
from exchange.audit.tree import HASH_SIZE, MAX_TREE_SIZE, NODE_PREFIX
from exchange.errors import AuditError

TILE_HEIGHT = 8  # tlog-tiles: each tile spans 8 tree levels
TILE_WIDTH = 256  # 2**TILE_HEIGHT hashes in a full tile
MAX_TILE_LEVEL = 63
MAX_ENTRY_BYTES = 0xFFFF  # entry bundles prefix each entry with a big-endian uint16
_MAX_INDEX_GROUPS = 7  # a uint64 has at most 20 digits: seven groups of three


class TileError(AuditError, ValueError):
    """A tile path, tile or entry bundle breaks a tlog-tiles rule."""


@dataclass(frozen=True, slots=True)
class TileId:
    """A tile (``level`` 0–63) or an entry bundle (``level`` None); ``width`` 1–256."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if self.level is not None and not 0 <= self.level <= MAX_TILE_LEVEL:
            raise TileError(f"tile level {self.level} is outside 0..{MAX_TILE_LEVEL}")
        if not 0 <= self.index <= MAX_TREE_SIZE:
            raise TileError(f"tile index {self.index} does not fit a uint64")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TileError(f"tile width {self.width} is outside 1..{TILE_WIDTH}")

    @property
    def partial(self) -> bool:
        """Whether this is a partial tile (fewer than 256 hashes or entries)."""
        return self.width < TILE_WIDTH

    def path(self) -> str:
        """Return the path relative to the log prefix, e.g. ``tile/0/x001/234.p/7``."""
        level = "entries" if self.level is None else str(self.level)
        suffix = f".p/{self.width}" if self.partial else ""
        return f"tile/{level}/{encode_index(self.index)}{suffix}"


def encode_index(index: int) -> str:
    """Return N in three-digit groups, all but the last x-prefixed (1234067 → x001/x234/067)."""
    if not 0 <= index <= MAX_TREE_SIZE:
        raise TileError(f"tile index {index} does not fit a uint64")
    groups: list[str] = []
    while True:
        groups.append(f"{index % 1000:03d}")
        index //= 1000
        if index == 0:
            break
    groups.reverse()
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def tile_path(level: int, index: int, width: int = 0) -> str:
    """Return ``tile/<L>/<N>[.p/<W>]``; width 0 or 256 means a full tile."""
    return TileId(level, index, width or TILE_WIDTH).path()


def entries_path(index: int, width: int = 0) -> str:
    """Return ``tile/entries/<N>[.p/<W>]``; width 0 or 256 means a full bundle."""
    return TileId(None, index, width or TILE_WIDTH).path()


def entries_path_for_index(entry_index: int, size: int) -> str:
    """Return the path of the bundle holding ``entry_index`` in a log of ``size`` entries."""
    if not 0 <= entry_index < size:
        raise TileError(f"entry index {entry_index} is not below log size {size}")
    bundle = entry_index // TILE_WIDTH
    return entries_path(bundle, min(TILE_WIDTH, size - bundle * TILE_WIDTH))


def _parse_decimal(text: str, what: str, maximum: int) -> int:
    if not text or not text.isascii() or not text.isdigit() or (text != "0" and text[0] == "0"):
        raise TileError(f"{what} {text[:30]!r} is not canonical decimal")
    # Length first: int() refuses (with a plain ValueError) beyond 4300 digits.
    if len(text) > len(str(maximum)):
        raise TileError(f"{what} {text[:30]!r} exceeds {maximum}")
    value = int(text)
    if value > maximum:
        raise TileError(f"{what} {value} exceeds {maximum}")
    return value


def _parse_index(segment: str) -> tuple[int, int]:
    index_part, sep, width_part = segment.partition(".p/")
    width = _parse_decimal(width_part, "tile width", TILE_WIDTH - 1) if sep else TILE_WIDTH
    if width == 0:
        raise TileError("tile width 0 is not allowed")
    groups = index_part.split("/")
    if len(groups) > _MAX_INDEX_GROUPS:
        raise TileError(f"tile index has {len(groups)} groups, at most {_MAX_INDEX_GROUPS}")
    for group in groups[:-1]:
        if len(group) != 4 or group[0] != "x" or not group[1:].isdigit() or not group.isascii():
            raise TileError(f"tile index group {group[:10]!r} is not x + three digits")
    last = groups[-1]
    if len(last) != 3 or not last.isdigit() or not last.isascii():
        raise TileError(f"tile index group {last[:10]!r} is not three digits")
    value = int("".join(g.lstrip("x") for g in groups))
    if value > MAX_TREE_SIZE:
        raise TileError("tile index does not fit a uint64")
    if encode_index(value) != index_part:
        raise TileError(f"tile index {index_part[:40]!r} is not canonical")
    return value, width


def parse_tile_path(path: str) -> TileId:
    """Return the tile or bundle a ``tile/...`` path names; strict, canonical encodings only."""
    prefix, _, rest = path.partition("/")
    level_segment, _, index_segment = rest.partition("/")
    if prefix != "tile" or not index_segment:
        raise TileError(f"not a tile path: {path[:80]!r}")
    level: int | None = None
    if level_segment != "entries":
        level = _parse_decimal(level_segment, "tile level", MAX_TILE_LEVEL)
    index, width = _parse_index(index_segment)
    return TileId(level, index, width)


def tile_width(level: int, index: int, size: int) -> int:
    """Return how many hashes tile (level, index) holds for tree ``size`` (0: no such tile)."""
    count = (size >> (TILE_HEIGHT * level)) - index * TILE_WIDTH
    return max(0, min(TILE_WIDTH, count))


def tiles_for_size(size: int) -> list[TileId]:
    """Return every tile (full and partial) a log of ``size`` must serve, level by level."""
    return changed_tiles(0, size)


def changed_tiles(old_size: int, new_size: int) -> list[TileId]:
    """Return the tiles that are new or grew when the tree goes from old_size to new_size.

    Partial tiles are never hashed into the level above, so a level-L tile
    exists only while 256**L · 1 hashes are complete below it.
    """
    if not 0 <= old_size <= new_size <= MAX_TREE_SIZE:
        raise TileError(f"sizes {old_size}, {new_size} are not ordered uint64s")
    out: list[TileId] = []
    level = 0
    while level <= MAX_TILE_LEVEL and (new_size >> (TILE_HEIGHT * level)):
        old_count = old_size >> (TILE_HEIGHT * level)
        new_count = new_size >> (TILE_HEIGHT * level)
        if new_count != old_count:
            for index in range(old_count // TILE_WIDTH, -(-new_count // TILE_WIDTH)):
                out.append(TileId(level, index, tile_width(level, index, new_size)))
        level += 1
    return out


def entry_bundles(old_size: int, new_size: int) -> list[TileId]:
    """Return the entry bundles that are new or grew from old_size to new_size."""
    if not 0 <= old_size <= new_size:
        raise TileError(f"sizes {old_size}, {new_size} are not ordered")
    return [
        TileId(None, index, min(TILE_WIDTH, new_size - index * TILE_WIDTH))
        for index in range(old_size // TILE_WIDTH, -(-new_size // TILE_WIDTH))
    ]


def tile_node_ids(tile: TileId) -> list[NodeId]:
    """Return the tree node ids whose hashes make up ``tile``, in order."""
    if tile.level is None:
        raise TileError("entry bundles hold entries, not node hashes")
    height = TILE_HEIGHT * tile.level
    first = tile.index * TILE_WIDTH
    return [(height, first + i) for i in range(tile.width)]


def build_tile(tile: TileId, get_hashes: HashGetter) -> bytes:
    """Return the tile contents: the concatenated 32-byte hashes of its nodes."""
    return b"".join(get_hashes(tile_node_ids(tile)))


def split_tile(data: bytes, width: int) -> list[bytes]:
    """Return the hashes in a tile, requiring exactly 32·width bytes."""
    if len(data) != HASH_SIZE * width:
        raise TileError(f"tile is {len(data)} bytes, want {HASH_SIZE * width}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """Return an entry bundle: each entry as a big-endian uint16 length then its bytes."""
    out = bytearray()
    count = 0
    for entry in entries:
        if len(entry) > MAX_ENTRY_BYTES:
            raise TileError(f"entry is {len(entry)} bytes, more than {MAX_ENTRY_BYTES}")
        out += len(entry).to_bytes(2, "big") + entry
        count += 1
    if count > TILE_WIDTH:
        raise TileError(f"bundle has {count} entries, more than {TILE_WIDTH}")
    return bytes(out)


def parse_bundle(data: bytes, width: int | None = None) -> list[bytes]:
    """Return the entries of a bundle; with ``width``, require exactly that many."""
    entries: list[bytes] = []
    position = 0
    while position < len(data):
        if position + 2 > len(data):
            raise TileError("entry bundle ends inside a length prefix")
        length = int.from_bytes(data[position : position + 2], "big")
        position += 2
        if position + length > len(data):
            raise TileError(f"entry of {length} bytes runs past the end of the bundle")
        entries.append(data[position : position + length])
        position += length
    if width is not None and len(entries) != width:
        raise TileError(f"bundle has {len(entries)} entries, want {width}")
    return entries


TileReader = Callable[[Sequence[TileId]], Sequence[bytes]]
"""Return the contents of each requested tile, in order.

Contract: MUST return exactly the tile bytes (32·width) for each id, and MUST
raise when a tile is missing. A log may serve the full tile where a partial
one was asked; readers then return its first 32·width bytes.
"""


def _subtree(hashes: Sequence[bytes]) -> bytes:
    level = list(hashes)
    while len(level) > 1:
        level = [
            hashlib.sha256(NODE_PREFIX + level[i] + level[i + 1]).digest()
            for i in range(0, len(level), 2)
        ]
    return level[0]


def hashes_from_tiles(read_tiles: TileReader, size: int) -> HashGetter:
    """Return a node-hash getter for the tree of ``size`` that reads tlog-tiles.

    Nodes between tile levels are rebuilt from the 2**r hashes below them in
    one tile. Tiles are fetched once per call and checked for length.
    """

    def locate(level: int, index: int) -> tuple[TileId, int, int]:
        tile_level, height = divmod(level, TILE_HEIGHT)
        first = index << height
        tile_index = first // TILE_WIDTH
        width = tile_width(tile_level, tile_index, size)
        if (index + 1) << level > size or width == 0:
            raise TileError(f"node ({level}, {index}) is not complete in a tree of {size}")
        return TileId(tile_level, tile_index, width), first - tile_index * TILE_WIDTH, 1 << height

    def get(ids: Sequence[NodeId]) -> list[bytes]:
        located = [locate(level, index) for level, index in ids]
        wanted = list(dict.fromkeys(tile for tile, _, _ in located))
        contents = dict(zip(wanted, read_tiles(wanted), strict=True))
        split = {tile: split_tile(data, tile.width) for tile, data in contents.items()}
        return [_subtree(split[tile][start : start + count]) for tile, start, count in located]

    return get
