"""The manifest that names a file, its layout in pieces, and the content id.

A file of ``size`` bytes is cut into data chunks of ``chunk_size`` bytes (the last one
shorter).  Every ``k`` consecutive data chunks form a *group*, and Reed–Solomon coding
adds ``n - k`` parity pieces to each group, so any ``k`` of a group's pieces rebuild it
(:mod:`zmesh.chunks.erasure`).  The last group may hold fewer than ``k`` data chunks: the
missing ones count as known zeros (a shortened code), so it still gets its ``n - k``
parity pieces.  A group's parity pieces are as long as its first data chunk.

Pieces are numbered group by group: group ``g`` owns pieces ``g*n`` onwards, its data
chunks first, then its parity pieces.  :class:`Layout` derives every count and length
from the four parameters; nothing else decides them.

The manifest is 54 bytes, fixed and canonical: a magic, the four parameters, the number
of data chunks (redundant, so a manifest that lies about its size is caught on parsing)
and the Merkle root over the groups (:mod:`zmesh.chunks.content`).  The content id is
the SHA-256 of that encoding, printed as ``zm1`` and unpadded lowercase base32.
"""

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from ..codec import Buffer, BufferReadError, push_uint
from .errors import ContentIdError, ManifestError

DEFAULT_CHUNK_SIZE = 256 * 1024
MIN_CHUNK_SIZE = 1 << 12
MAX_CHUNK_SIZE = 1 << 22
DEFAULT_K = 8  # data chunks per group (a group is 2 MiB at the default chunk size)
DEFAULT_N = 10  # pieces per group: 25% parity, any 2 of 10 may go missing
MAX_N = 32  # pieces per group (zfec allows 256; decoding costs grow with k)
MAX_GROUP_BYTES = 1 << 25  # k * chunk_size: what rebuilding one group holds in memory
MAX_FILE_SIZE = 1 << 40
MAX_CHUNKS = 1 << 24  # data chunks of one file, so piece counts and proofs stay bounded

MAGIC = b"zmc\x01"
ROOT_SIZE = 32
MANIFEST_SIZE = len(MAGIC) + 8 + 4 + 1 + 1 + 4 + ROOT_SIZE

ID_PREFIX = "zm1"
_ID_DIGEST_SIZE = 32
_ID_BODY = re.compile(r"[a-z2-7]{52}")
ID_LENGTH = len(ID_PREFIX) + 52


@dataclass(frozen=True, slots=True)
class Layout:
    """How a file of ``size`` bytes is laid out in chunks, groups and pieces.

    Construction checks every bound and raises ManifestError (naming the bound) for
    parameters that no honest sharer would use."""

    size: int
    chunk_size: int = DEFAULT_CHUNK_SIZE
    k: int = DEFAULT_K
    n: int = DEFAULT_N

    def __post_init__(self) -> None:
        if not 0 <= self.size <= MAX_FILE_SIZE:
            raise ManifestError(f"file size {self.size} is outside 0..{MAX_FILE_SIZE}")
        cs = self.chunk_size
        if not MIN_CHUNK_SIZE <= cs <= MAX_CHUNK_SIZE or cs & (cs - 1):
            raise ManifestError(
                f"chunk size {cs} is not a power of two in {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}"
            )
        if not 1 <= self.k <= self.n <= MAX_N:
            raise ManifestError(
                f"erasure parameters {self.k}-of-{self.n} are not 1 <= k <= n <= {MAX_N}"
            )
        if self.k * cs > MAX_GROUP_BYTES:
            raise ManifestError(
                f"a group of {self.k} chunks of {cs} bytes exceeds {MAX_GROUP_BYTES}"
            )
        if self.data_chunks > MAX_CHUNKS:
            raise ManifestError(f"{self.data_chunks} chunks exceed the limit of {MAX_CHUNKS}")

    @property
    def data_chunks(self) -> int:
        return -(-self.size // self.chunk_size)

    @property
    def groups(self) -> int:
        return -(-self.data_chunks // self.k)

    @property
    def pieces(self) -> int:
        return self.data_chunks + self.groups * (self.n - self.k)

    def group_data_count(self, group: int) -> int:
        """How many data chunks group ``group`` holds (``k`` except maybe for the last)."""
        self._check_group(group)
        return min(self.k, self.data_chunks - group * self.k)

    def group_piece_count(self, group: int) -> int:
        return self.group_data_count(group) + self.n - self.k

    def group_pieces(self, group: int) -> range:
        """The piece indices of group ``group``."""
        start = group * self.n
        return range(start, start + self.group_piece_count(group))

    def block_length(self, group: int) -> int:
        """The length every piece of the group is padded to for coding (its first chunk's)."""
        self._check_group(group)
        return min(self.chunk_size, self.size - group * self.k * self.chunk_size)

    def locate(self, index: int) -> tuple[int, int]:
        """(group, share number) of piece ``index``; share numbers ``0..k-1`` are data
        chunks and ``k..n-1`` parity pieces.  Raises ManifestError outside the file."""
        if not 0 <= index < self.pieces:
            raise ManifestError(f"piece {index} is outside 0..{self.pieces - 1}")
        group, position = divmod(index, self.n)
        data = self.group_data_count(group)
        return group, position if position < data else self.k + position - data

    def piece_index(self, group: int, share: int) -> int:
        """The inverse of :meth:`locate`; raises ManifestError for a share the group lacks."""
        data = self.group_data_count(group)
        if 0 <= share < data:
            return group * self.n + share
        if self.k <= share < self.n:
            return group * self.n + data + share - self.k
        raise ManifestError(f"group {group} has no share {share}")

    def piece_length(self, index: int) -> int:
        """The exact length of piece ``index`` (data chunks keep their true length)."""
        group, share = self.locate(index)
        if share >= self.k:
            return self.block_length(group)
        chunk = group * self.k + share
        return min(self.chunk_size, self.size - chunk * self.chunk_size)

    def chunk_range(self, group: int) -> tuple[int, int]:
        """The byte range ``[start, end)`` of the file that group ``group`` covers."""
        self._check_group(group)
        start = group * self.k * self.chunk_size
        return start, min(self.size, start + self.k * self.chunk_size)

    def _check_group(self, group: int) -> None:
        if not 0 <= group < self.groups:
            raise ManifestError(f"group {group} is outside 0..{self.groups - 1}")


@dataclass(frozen=True, slots=True)
class ContentId:
    """The name of a manifest: the SHA-256 of its encoding."""

    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != _ID_DIGEST_SIZE:
            raise ContentIdError("a content id is a 32-byte digest")

    def __str__(self) -> str:
        return ID_PREFIX + base64.b32encode(self.digest).decode("ascii").rstrip("=").lower()

    @classmethod
    def parse(cls, text: str) -> "ContentId":
        """Parse the text form; raises ContentIdError for anything that is not exactly
        ``zm1`` and 52 lowercase base32 characters with zero padding bits."""
        if not isinstance(text, str) or len(text) != ID_LENGTH or not text.startswith(ID_PREFIX):
            raise ContentIdError(f"a content id is {ID_PREFIX!r} and 52 base32 characters")
        body = text[len(ID_PREFIX) :]
        if not _ID_BODY.fullmatch(body):
            raise ContentIdError("a content id uses only the characters a-z and 2-7")
        try:
            digest = base64.b32decode(body.upper() + "====")
        except binascii.Error:  # pragma: no cover - the pattern already excludes it
            raise ContentIdError("a content id is not base32") from None
        parsed = cls(digest)
        if str(parsed) != text:
            raise ContentIdError("a content id's last character has non-zero padding bits")
        return parsed


@dataclass(frozen=True, slots=True)
class Manifest:
    """What names a file: its layout and the Merkle root over its groups."""

    layout: Layout
    root: bytes

    def __post_init__(self) -> None:
        if len(self.root) != ROOT_SIZE:
            raise ManifestError("a manifest root is 32 bytes")

    def encode(self) -> bytes:
        lay = self.layout
        return b"".join(
            (
                MAGIC,
                push_uint(lay.size, 8),
                push_uint(lay.chunk_size, 4),
                push_uint(lay.k, 1),
                push_uint(lay.n, 1),
                push_uint(lay.data_chunks, 4),
                self.root,
            )
        )

    @property
    def content_id(self) -> ContentId:
        return ContentId(hashlib.sha256(self.encode()).digest())


def decode_manifest(data: bytes) -> Manifest:
    """Parse a manifest; raises ManifestError for a wrong length or magic, a bound
    broken, or a chunk count that does not match the size."""
    if len(data) != MANIFEST_SIZE:
        raise ManifestError(f"a manifest is {MANIFEST_SIZE} bytes, not {len(data)}")
    buf = Buffer(bytes(data))
    try:
        if buf.pull_bytes(len(MAGIC)) != MAGIC:
            raise ManifestError("not a zMesh manifest (bad magic or version)")
        size, chunk_size = buf.pull_uint64(), buf.pull_uint32()
        k, n, chunks = buf.pull_uint8(), buf.pull_uint8(), buf.pull_uint32()
        root = buf.pull_bytes(ROOT_SIZE)
        buf.expect_eof()
    except BufferReadError as exc:  # pragma: no cover - the length was checked
        raise ManifestError(str(exc)) from None
    layout = Layout(size, chunk_size, k, n)
    if chunks != layout.data_chunks:
        raise ManifestError(
            f"the manifest claims {chunks} chunks, but {size} bytes make {layout.data_chunks}"
        )
    return Manifest(layout, root)


def manifest_for(content_id: ContentId, data: bytes) -> Manifest:
    """Parse a manifest a peer sent for ``content_id``; raises ManifestError if it is
    not the manifest that id names, or does not parse."""
    if hashlib.sha256(data).digest() != content_id.digest:
        raise ManifestError(f"the manifest does not hash to {content_id}")
    return decode_manifest(data)
