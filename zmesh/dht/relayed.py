"""Provider lookups that another node runs for us, through a circuit.

Theory of operation.  A provider lookup names the content its maker wants, so the nodes
near the content id must not learn who makes it.  The fetcher opens a stream whose
target is :data:`LOOKUP_TARGET` on a session whose final hop is any node running the DHT,
sends the content id's digest and finishes its direction; that final hop runs the lookup
as its own and answers with the provider records it verified, then finishes.  The DHT
sees the final hop asking; the final hop sees the content id but only the circuit's last
relay, never the fetcher (as an exit resolves names for Tor clients).

The records are signed by their publishers, so a final hop can withhold records but not
forge one: the fetcher verifies every record again and keeps only unexpired provider
records for its key (:func:`decode_reply`); a final hop that answers nothing useful is
replaced by another.

Wire format (the stream's bytes in each direction, then FIN)::

    request = key                           (32 bytes)
    reply   = u8 count | count x (u16 length | record)   count <= MAX_REPLY_RECORDS
"""

from collections.abc import Sequence

from ..codec import Buffer, push_vector
from ..errors import RemoteProtocolError, ZMeshError
from .records import MAX_RECORD_SIZE, Record, RecordType, decode_record
from .routing import ID_SIZE

LOOKUP_TARGET = "dht:providers"
MAX_REPLY_RECORDS = 20  # the DHT's own provider lookup stops at 20 (DhtConfig.max_providers)
MAX_REPLY_SIZE = 1 + MAX_REPLY_RECORDS * (2 + MAX_RECORD_SIZE)


def encode_request(key: bytes) -> bytes:
    """The request for the providers of content digest ``key``; ValueError if malformed."""
    if len(key) != ID_SIZE:
        raise ValueError(f"a content key is {ID_SIZE} bytes")
    return key


def decode_request(data: bytes) -> bytes:
    """The key a request asks for; RemoteProtocolError unless it is exactly one key."""
    if len(data) != ID_SIZE:
        raise RemoteProtocolError(f"a lookup request is {ID_SIZE} bytes, not {len(data)}")
    return data


def encode_reply(records: Sequence[Record]) -> bytes:
    """A reply carrying the first :data:`MAX_REPLY_RECORDS` of ``records``."""
    kept = records[:MAX_REPLY_RECORDS]
    return bytes([len(kept)]) + b"".join(push_vector(r.encode(), 2) for r in kept)


def decode_reply(data: bytes, key: bytes, now: float) -> tuple[list[Record], int]:
    """The verified, unexpired provider records for ``key`` in a reply, and how many
    records were refused (forged, expired, for another key or of another type; one
    publisher counts once).  Raises RemoteProtocolError if the reply is malformed or
    oversized."""
    if len(data) > MAX_REPLY_SIZE:
        raise RemoteProtocolError("lookup reply is oversized")
    buf = Buffer(data)
    count = buf.pull_uint8()
    if count > MAX_REPLY_RECORDS:
        raise RemoteProtocolError(f"lookup reply holds {count} records")
    raw = [buf.pull_vector(2, MAX_RECORD_SIZE) for _ in range(count)]
    buf.expect_eof()
    kept: dict[bytes, Record] = {}
    refused = 0
    for item in raw:
        try:
            record = decode_record(item)
            if record.type is not RecordType.PROVIDER or record.key != key:
                raise RemoteProtocolError("a record for something else")
            if record.publisher in kept:
                raise RemoteProtocolError("a publisher named twice")
            record.verify(now)
        except ZMeshError:
            refused += 1
            continue
        kept[record.publisher] = record
    return list(kept.values()), refused


__all__ = [
    "LOOKUP_TARGET",
    "MAX_REPLY_RECORDS",
    "MAX_REPLY_SIZE",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
]
