"""Layouts, manifests and content ids (zmesh/chunks/manifest.py)."""

import base64
import hashlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.chunks.errors import ContentError, ContentIdError, ManifestError
from zmesh.chunks.manifest import (
    DEFAULT_CHUNK_SIZE,
    ID_LENGTH,
    MANIFEST_SIZE,
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    MAX_FILE_SIZE,
    MAX_GROUP_BYTES,
    MAX_N,
    MIN_CHUNK_SIZE,
    ContentId,
    Layout,
    Manifest,
    decode_manifest,
    manifest_for,
)
from zmesh.errors import RemoteProtocolError

ROOT = bytes(range(32))
KIB = 1024


def manifest(
    size: int = 10 * DEFAULT_CHUNK_SIZE + 5,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    k: int = 8,
    n: int = 10,
) -> Manifest:
    return Manifest(Layout(size, chunk_size, k, n), ROOT)


def test_layout_counts_and_lengths() -> None:
    lay = Layout(10 * DEFAULT_CHUNK_SIZE + 5)  # 11 chunks, the last 5 bytes
    assert (lay.data_chunks, lay.groups, lay.pieces) == (11, 2, 11 + 2 * 2)
    assert lay.group_pieces(0) == range(0, 10)
    assert lay.group_pieces(1) == range(10, 15)  # 3 data chunks, 2 parity
    assert lay.group_data_count(1) == 3
    assert lay.block_length(1) == DEFAULT_CHUNK_SIZE
    assert [lay.locate(i) for i in range(10, 15)] == [(1, 0), (1, 1), (1, 2), (1, 8), (1, 9)]
    assert [lay.piece_index(*lay.locate(i)) for i in range(lay.pieces)] == list(range(lay.pieces))
    assert lay.piece_length(12) == 5
    assert lay.piece_length(13) == DEFAULT_CHUNK_SIZE
    assert lay.chunk_range(1) == (8 * DEFAULT_CHUNK_SIZE, 10 * DEFAULT_CHUNK_SIZE + 5)
    assert (
        sum(
            lay.piece_length(lay.piece_index(g, s))
            for g in range(2)
            for s in range(lay.group_data_count(g))
        )
        == lay.size
    )


def test_small_file_parity_is_as_short_as_the_file() -> None:
    lay = Layout(1000)
    assert (lay.data_chunks, lay.groups, lay.pieces) == (1, 1, 3)
    assert [lay.piece_length(i) for i in range(3)] == [1000, 1000, 1000]
    empty = Layout(0)
    assert (empty.data_chunks, empty.groups, empty.pieces) == (0, 0, 0)


def test_layout_lookups_outside_the_file_are_errors() -> None:
    lay = Layout(3 * DEFAULT_CHUNK_SIZE)
    for bad in (-1, lay.pieces):
        with pytest.raises(ManifestError, match="outside"):
            lay.locate(bad)
    with pytest.raises(ManifestError, match="outside"):
        lay.block_length(1)
    with pytest.raises(ManifestError, match="no share"):
        lay.piece_index(0, 5)  # data share 5 of a group with 3 chunks


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ((-1, DEFAULT_CHUNK_SIZE, 8, 10), "file size"),
        ((MAX_FILE_SIZE + 1, DEFAULT_CHUNK_SIZE, 8, 10), "file size"),
        ((100, MIN_CHUNK_SIZE // 2, 8, 10), "chunk size"),
        ((100, MAX_CHUNK_SIZE * 2, 1, 2), "chunk size"),
        ((100, DEFAULT_CHUNK_SIZE + 1, 8, 10), "chunk size"),
        ((100, DEFAULT_CHUNK_SIZE, 0, 10), "erasure"),
        ((100, DEFAULT_CHUNK_SIZE, 11, 10), "erasure"),
        ((100, DEFAULT_CHUNK_SIZE, 8, MAX_N + 1), "erasure"),
        ((100, MAX_CHUNK_SIZE, MAX_GROUP_BYTES // MAX_CHUNK_SIZE + 1, 32), "group"),
        ((MIN_CHUNK_SIZE * (MAX_CHUNKS + 1), MIN_CHUNK_SIZE, 8, 10), "chunks exceed"),
    ],
)
def test_every_layout_bound_is_enforced(params: tuple[int, int, int, int], match: str) -> None:
    with pytest.raises(ManifestError, match=match):
        Layout(*params)


def test_manifest_round_trip_and_encoding() -> None:
    m = manifest()
    data = m.encode()
    assert len(data) == MANIFEST_SIZE == 54
    assert data[:4] == b"zmc\x01"
    assert decode_manifest(data) == m
    assert m.content_id.digest == hashlib.sha256(data).digest()
    assert manifest_for(m.content_id, data) == m


def test_manifest_split_and_trailing_input_rejected() -> None:
    data = manifest().encode()
    for cut in range(len(data)):
        with pytest.raises(ManifestError, match="54 bytes"):
            decode_manifest(data[:cut])
    with pytest.raises(ManifestError, match="54 bytes"):
        decode_manifest(data + b"\0")


def _with(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def test_manifests_that_lie_about_sizes_are_rejected() -> None:
    data = manifest().encode()  # 11 chunks
    for chunks in (0, 10, 12, 2**32 - 1):
        with pytest.raises(ManifestError, match="claims"):
            decode_manifest(_with(data, 18, chunks.to_bytes(4, "big")))
    with pytest.raises(ManifestError, match="file size"):
        decode_manifest(_with(data, 4, (2**64 - 1).to_bytes(8, "big")))
    with pytest.raises(ManifestError, match="chunk size"):
        decode_manifest(_with(data, 12, (3 * KIB).to_bytes(4, "big")))
    with pytest.raises(ManifestError, match="erasure"):
        decode_manifest(_with(data, 16, bytes([9, 8])))
    with pytest.raises(ManifestError, match="magic"):
        decode_manifest(_with(data, 3, b"\x02"))
    with pytest.raises(ManifestError, match="hash"):
        manifest_for(manifest(size=1).content_id, data)


def test_manifest_rejects_a_bad_root() -> None:
    with pytest.raises(ManifestError, match="32 bytes"):
        Manifest(Layout(1), b"short")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
@example(b"")
@example(manifest().encode())
def test_fuzz_manifest_parses_or_raises_manifest_error(data: bytes) -> None:
    try:
        m = decode_manifest(data)
    except ManifestError:
        return
    assert m.encode() == data


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**40),
    st.sampled_from([4 * KIB, 64 * KIB, DEFAULT_CHUNK_SIZE]),
    st.integers(1, 8),
    st.integers(0, 8),
)
def test_fuzz_valid_manifests_round_trip(size: int, chunk_size: int, k: int, extra: int) -> None:
    try:
        m = Manifest(Layout(size, chunk_size, k, k + extra), ROOT)
    except ManifestError:
        return
    assert decode_manifest(m.encode()) == m
    assert ContentId.parse(str(m.content_id)) == m.content_id


def test_content_id_text_form() -> None:
    cid = ContentId(bytes(32))
    assert str(cid) == "zm1" + "a" * 52
    cid = manifest().content_id
    text = str(cid)
    assert len(text) == ID_LENGTH == 55
    assert text.startswith("zm1") and text == text.lower() and "=" not in text
    assert ContentId.parse(text) == cid
    assert base64.b32decode(text[3:].upper() + "====") == cid.digest


@pytest.mark.parametrize(
    "text",
    [
        "",
        "zm1",
        "zm1" + "a" * 51,
        "zm1" + "a" * 53,
        "zm2" + "a" * 52,
        "ZM1" + "a" * 52,
        "zm1" + "A" * 52,
        "zm1" + "a" * 51 + "1",  # not base32
        "zm1" + "a" * 51 + "=",
        "zm1" + "a" * 51 + "b",  # non-zero padding bits (two ids would name one digest)
        " zm1" + "a" * 52,
        "zm1" + "a" * 52 + "\n",
        "zm1" + "a" * 50 + "é",
    ],
)
def test_content_id_parsing_rejects_anything_else(text: str) -> None:
    with pytest.raises(ContentIdError):
        ContentId.parse(text)


def test_content_id_rejects_bad_digest_and_non_text() -> None:
    with pytest.raises(ContentIdError):
        ContentId(bytes(31))
    with pytest.raises(ContentIdError):
        ContentId.parse(b"zm1" + b"a" * 52)  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=70) | st.from_regex(r"zm1[a-z2-7]{50,54}", fullmatch=True))
def test_fuzz_content_id_parses_or_raises_content_id_error(text: str) -> None:
    try:
        cid = ContentId.parse(text)
    except ContentIdError as exc:
        assert isinstance(exc, ContentError) and isinstance(exc, RemoteProtocolError)
        return
    assert str(cid) == text


@given(st.binary(min_size=32, max_size=32))
def test_fuzz_content_id_round_trip(digest: bytes) -> None:
    cid = ContentId(digest)
    assert ContentId.parse(str(cid)) == cid
