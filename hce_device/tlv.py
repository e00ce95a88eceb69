"""Minimal BER-TLV (EMV Book 3 Annex B) and DOL handling for the card emulator.

Why our own: pyemv's ``tlv`` keeps only the last of repeated sibling tags (a PPSE directory can list
several ``61`` entries) and has no DOL support (emv-hce.md §12.1, §12.4); pyemv is also only a test
dependency here. This module works on ``bytes``, keeps order and duplicates, and stays small.

Tags are handled as upper-case hex strings (``"9F02"``), as in the spec's tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

_CONSTRUCTED = 0x20  # tag byte 1, b6: the value is itself TLV data
_MORE_TAG_BYTES = 0x1F  # tag byte 1, b5-b1 all set: the tag continues
_TAG_CONTINUES = 0x80  # subsequent tag bytes, b8: another byte follows
_LONG_LENGTH = 0x80  # length byte 1, b8: b7-b1 count the length bytes that follow
_MAX_LENGTH_BYTES = 3  # EMV values never need more than 3 length bytes
_PADDING = (0x00, 0xFF)  # filler bytes allowed between TLV objects (EMV Book 3 B1)


class TlvError(ValueError):
    """Malformed BER-TLV or DOL data (truncated tag, length or value)."""


@dataclass(frozen=True)
class Tlv:
    """One data object: its tag (hex), raw value, and for constructed tags the parsed children."""

    tag: str
    value: bytes
    children: tuple[Tlv, ...] = field(default=())

    @property
    def constructed(self) -> bool:
        return is_constructed(self.tag)


def is_constructed(tag: str) -> bool:
    """Whether a tag's value is TLV data (``6F``, ``70``, ``77``, ``A5``, ``BF0C``...)."""
    return bool(bytes.fromhex(tag)[0] & _CONSTRUCTED)


def encode_tag(tag: str) -> bytes:
    """The tag's bytes, checked to be one well-formed BER tag (so DOLs and templates stay parseable)."""
    raw = bytes.fromhex(tag)
    parsed, end = _read_tag(raw, 0)
    if end != len(raw) or parsed != tag.upper():
        raise TlvError(f"not a single BER tag: {tag!r}")
    return raw


def encode_length(length: int) -> bytes:
    """Short form below 128, else ``8n`` followed by n big-endian bytes."""
    if length < 0:
        raise TlvError("negative length")
    if length < _LONG_LENGTH:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(body) > _MAX_LENGTH_BYTES:
        raise TlvError(f"length {length} too large")
    return bytes([_LONG_LENGTH | len(body)]) + body


def encode(tag: str, value: bytes | Iterable[bytes]) -> bytes:
    """One TLV; ``value`` may be raw bytes or already-encoded children (joined in order)."""
    body = value if isinstance(value, bytes | bytearray) else b"".join(value)
    return encode_tag(tag) + encode_length(len(body)) + bytes(body)


def encode_many(items: Iterable[tuple[str, bytes]]) -> bytes:
    """Primitive TLVs in the given order (duplicates kept)."""
    return b"".join(encode(tag, value) for tag, value in items)


def decode(data: bytes) -> list[Tlv]:
    """All data objects in ``data``, in order, constructed ones parsed recursively."""
    objects: list[Tlv] = []
    offset = 0
    while offset < len(data):
        if data[offset] in _PADDING:
            offset += 1
            continue
        tag, offset = _read_tag(data, offset)
        length, offset = _read_length(data, offset)
        if offset + length > len(data):
            raise TlvError(f"value of {tag} runs past the end of the data")
        value = data[offset : offset + length]
        offset += length
        children = tuple(decode(value)) if is_constructed(tag) else ()
        objects.append(Tlv(tag, value, children))
    return objects


def find(objects: Sequence[Tlv], tag: str) -> Tlv | None:
    """The first object with ``tag``, searching depth-first through templates."""
    wanted = tag.upper()
    for item in objects:
        if item.tag == wanted:
            return item
        found = find(item.children, wanted)
        if found is not None:
            return found
    return None


def flatten(objects: Sequence[Tlv]) -> dict[str, bytes]:
    """Tag → value of every primitive object (first occurrence wins), handy for tests and logs."""
    flat: dict[str, bytes] = {}
    for item in objects:
        if item.constructed:
            for tag, value in flatten(item.children).items():
                flat.setdefault(tag, value)
        else:
            flat.setdefault(item.tag, item.value)
    return flat


# --- data object lists (PDOL, CDOL1, UDOL) -----------------------------------------------------


@dataclass(frozen=True)
class DolEntry:
    """One DOL entry: which tag the terminal must send, and in how many bytes."""

    tag: str
    length: int


def parse_dol(dol: bytes) -> list[DolEntry]:
    """A DOL is tag ‖ length pairs with no values (e.g. CDOL1 ``9F0206 9F0306 ...``)."""
    entries: list[DolEntry] = []
    offset = 0
    while offset < len(dol):
        tag, offset = _read_tag(dol, offset)
        length, offset = _read_length(dol, offset)
        entries.append(DolEntry(tag, length))
    return entries


def dol_length(entries: Sequence[DolEntry]) -> int:
    """Total bytes of DOL-related data (what GPO's ``83`` / GEN AC's data must measure)."""
    return sum(entry.length for entry in entries)


def build_dol_data(entries: Sequence[DolEntry], values: Mapping[str, bytes]) -> bytes:
    """The terminal's DOL-related data: each value fitted to its entry (EMV Book 3 §5.4).

    Missing tags become zeros; longer values are truncated on the right; shorter ones are
    left-padded with zeros (numeric fields; fine for binary ones in this emulator's use).
    """
    out = bytearray()
    for entry in entries:
        value = values.get(entry.tag, b"")
        if len(value) >= entry.length:
            out += value[: entry.length]
        else:
            out += bytes(entry.length - len(value)) + value
    return bytes(out)


def split_dol_data(entries: Sequence[DolEntry], data: bytes) -> dict[str, bytes]:
    """The inverse of ``build_dol_data``: tag → its slice; ``TlvError`` if lengths disagree."""
    if len(data) != dol_length(entries):
        raise TlvError(f"DOL data is {len(data)} bytes, the DOL wants {dol_length(entries)}")
    values: dict[str, bytes] = {}
    offset = 0
    for entry in entries:
        values.setdefault(entry.tag, data[offset : offset + entry.length])
        offset += entry.length
    return values


# --- low level -----------------------------------------------------------------------------------


def _read_tag(data: bytes, offset: int) -> tuple[str, int]:
    if offset >= len(data):
        raise TlvError("truncated tag")
    start = offset
    first = data[offset]
    offset += 1
    if first & _MORE_TAG_BYTES == _MORE_TAG_BYTES:
        while True:
            if offset >= len(data):
                raise TlvError("truncated multi-byte tag")
            byte = data[offset]
            offset += 1
            if not byte & _TAG_CONTINUES:
                break
    return data[start:offset].hex().upper(), offset


def _read_length(data: bytes, offset: int) -> tuple[int, int]:
    if offset >= len(data):
        raise TlvError("truncated length")
    first = data[offset]
    offset += 1
    if not first & _LONG_LENGTH:
        return first, offset
    count = first & ~_LONG_LENGTH
    if count == 0 or count > _MAX_LENGTH_BYTES or offset + count > len(data):
        raise TlvError("bad long-form length")
    return int.from_bytes(data[offset : offset + count], "big"), offset + count


__all__ = [
    "DolEntry",
    "Tlv",
    "TlvError",
    "build_dol_data",
    "decode",
    "dol_length",
    "encode",
    "encode_length",
    "encode_many",
    "encode_tag",
    "find",
    "flatten",
    "is_constructed",
    "parse_dol",
    "split_dol_data",
]
