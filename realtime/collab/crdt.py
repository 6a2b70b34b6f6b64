"""What Tandem does with Yjs state through pycrdt, beyond applying updates.

Every function here works on a Doc of its own or on bytes, so the heavy ones (folding a long
log, reading a big document) can run in a worker thread while the event loop goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from pycrdt import Doc, Text, XmlElement, XmlFragment, XmlText, get_state, get_update

from domain.documents import DocFormat
from domain.errors import InvalidPayload

CONTENT = "content"  # the root every Tandem document keeps its content in
# An update that carries nothing: no structs and an empty delete set (Yjs writes [0, 0]).
EMPTY_UPDATE = b"\x00\x00"

Content = Text | XmlFragment


def content_root(doc: Doc[Any], fmt: DocFormat) -> Content:
    if fmt is DocFormat.RICH:
        fragment: XmlFragment = doc.get(CONTENT, type=XmlFragment)
        return fragment
    text: Text = doc.get(CONTENT, type=Text)
    return text


def doc_from(
    state: bytes | None, updates: Iterable[bytes] = (), *, threads: bool = False
) -> Doc[Any]:
    """A fresh Doc holding ``state`` and then ``updates``; applying the log through a Doc is
    linear, where ``merge_updates`` on a long log is superlinear (notes/collab-editing §3).
    ``threads``: the Doc is handed between threads (built in a worker, read on the loop)."""
    doc: Doc[Any] = Doc(allow_multithreading=threads)
    if state:
        doc.apply_update(state)
    for update in updates:
        doc.apply_update(update)
    return doc


def fold(state: bytes | None, updates: Sequence[bytes]) -> bytes:
    """Snapshot + log -> one state (what compaction stores)."""
    return doc_from(state, updates).get_update()


def text_of(state: bytes, fmt: DocFormat) -> str:
    """A document's content as text: the text itself, or the XML of a rich document."""
    return str(content_root(doc_from(state), fmt))


def initial_state(fmt: DocFormat, content: str) -> bytes:
    """The Yjs state of a new document whose content is ``content`` (only ever at creation:
    rebuilding a document from text while clients hold its Yjs state doubles the text)."""
    doc: Doc[Any] = Doc()
    root = content_root(doc, fmt)
    if isinstance(root, Text):
        root += content
    elif content:
        root.children.append(XmlText(content))
    return doc.get_update()


def replace_content(target: Doc[Any], source: Doc[Any], fmt: DocFormat) -> None:
    """Make ``target``'s content a copy of ``source``'s, as an edit of ``target`` (one
    transaction): clients converge to it like to any edit, and nothing doubles because
    nothing of ``source``'s history is merged into ``target``."""
    with target.transaction():
        old, new = content_root(target, fmt), content_root(source, fmt)
        if isinstance(old, Text) and isinstance(new, Text):
            old.clear()
            _copy_formatted(old, new.diff())
        elif isinstance(old, XmlFragment) and isinstance(new, XmlFragment):
            del old.children[0 : len(old.children)]
            _copy_children(old, new)


def set_text(root: Text, text: str) -> None:
    """Change ``root`` into ``text`` by touching only what differs (the common prefix and
    suffix stay, and so do the cursors anchored in them)."""
    current = str(root)
    prefix = 0
    limit = min(len(current), len(text))
    while prefix < limit and current[prefix] == text[prefix]:
        prefix += 1
    suffix = 0
    while (
        suffix < limit - prefix
        and current[len(current) - 1 - suffix] == text[len(text) - 1 - suffix]
    ):
        suffix += 1
    if len(current) - prefix - suffix:
        del root[prefix : len(current) - suffix]
    if len(text) - prefix - suffix:
        root.insert(prefix, text[prefix : len(text) - suffix])


def redundant(doc: Doc[Any], update: bytes) -> bool:
    """For an ``update`` that integrated nothing into ``doc``: whether ``doc`` holds everything
    it carries (its structs, and the items its deletions name), or it waits for structs from
    someone else (pending) and will integrate later, so must be kept."""
    known = state_vector(doc.get_state())
    own = get_state(update)
    if any(clock > known.get(client, 0) for client, clock in state_vector(own).items()):
        return False
    # The update's delete set alone: its diff against its own state keeps no struct.
    reader = _Reader(get_update(update, own), "a Yjs update")
    if reader.uint():
        return False
    for _ in range(reader.uint()):
        limit = known.get(reader.uint(), 0)
        for _ in range(reader.uint()):
            clock, length = reader.uint(), reader.uint()
            if clock + length > limit:
                return False  # deletes items this document has not seen yet
    return True


def state_vector(sv: bytes) -> dict[int, int]:
    """A decoded state vector (never compare them as bytes: entry order varies)."""
    reader = _Reader(sv, "a Yjs state vector")
    return {reader.uint(): reader.uint() for _ in range(reader.uint())}


def changes(doc: Doc[Any], update: bytes) -> bool:
    """Apply ``update`` to ``doc``; whether anything integrated (a duplicate changes nothing,
    though its bytes are never empty: an update carries its whole delete set)."""
    fired: list[bool] = []
    subscription = doc.observe(lambda _event: fired.append(True))
    try:
        doc.apply_update(update)
    finally:
        doc.unobserve(subscription)
    return bool(fired)


def edit_of(state: bytes, change: Callable[[Doc[Any]], None]) -> bytes:
    """The update ``change`` makes to a copy of ``state`` (as its own Yjs client), in one
    transaction; the original is untouched until the update is applied to it."""
    copy = doc_from(state)
    before = copy.get_state()
    with copy.transaction():
        change(copy)
    return copy.get_update(before)


def _copy_formatted(
    target: Text | XmlText, chunks: Sequence[tuple[Any, dict[str, Any] | None]]
) -> None:
    index = 0
    for value, attrs in chunks:
        if isinstance(value, str):
            target.insert(index, value, dict(attrs) if attrs else None)
            index += len(value)
        else:
            target.insert_embed(index, value, dict(attrs) if attrs else None)
            index += 1


def _copy_children(target: XmlFragment | XmlElement, source: XmlFragment | XmlElement) -> None:
    for child in source.children:
        if isinstance(child, XmlText):
            text = target.children.append(XmlText())
            _copy_formatted(text, child.diff())
        elif isinstance(child, XmlElement):
            element = target.children.append(
                XmlElement(child.tag, dict(child.attributes.__iter__()))
            )
            _copy_children(element, child)


# -- awareness ------------------------------------------------------------------------------

MAX_AWARENESS_STATE_BYTES = 4096


class AwarenessEntry(NamedTuple):
    client: int
    clock: int
    state: bytes  # JSON text; b"null" when the client is gone

    @property
    def removed(self) -> bool:
        return self.state in (b"", b"null")


def awareness_clients(update: bytes, *, max_clients: int) -> list[AwarenessEntry]:
    """The entries of a y-protocols awareness update.

    Raises:
        InvalidPayload: not exactly an awareness update, too many entries, or a state over
            the limit.
    """
    reader = _Reader(update, "a y-protocols awareness update")
    count = reader.uint()
    if count > max_clients:
        raise InvalidPayload(f"an awareness update may carry at most {max_clients} states")
    entries = []
    for _ in range(count):
        client, clock = reader.uint(), reader.uint()
        size = reader.uint()
        if size > MAX_AWARENESS_STATE_BYTES:
            raise InvalidPayload(
                f"an awareness state may be at most {MAX_AWARENESS_STATE_BYTES} bytes"
            )
        entries.append(AwarenessEntry(client, clock, reader.take(size)))
    if not reader.done:
        raise InvalidPayload("trailing bytes after the awareness update")
    return entries


def encode_awareness(entries: Iterable[AwarenessEntry]) -> bytes:
    items = list(entries)
    out = bytearray(_uint(len(items)))
    for entry in items:
        out += _uint(entry.client) + _uint(entry.clock) + _uint(len(entry.state)) + entry.state
    return bytes(out)


def _uint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Reader:
    """lib0's variable-length encoding, strictly bounded (pycrdt's Decoder slices past the
    end without complaint)."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._at = 0
        self._error = f"not {what}: truncated or malformed"

    @property
    def done(self) -> bool:
        return self._at == len(self._data)

    def uint(self) -> int:
        value, shift = 0, 0
        while True:
            if self._at >= len(self._data) or shift > 63:
                raise InvalidPayload(self._error)
            byte = self._data[self._at]
            self._at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    def take(self, size: int) -> bytes:
        if self._at + size > len(self._data):
            raise InvalidPayload(self._error)
        chunk = self._data[self._at : self._at + size]
        self._at += size
        return chunk
