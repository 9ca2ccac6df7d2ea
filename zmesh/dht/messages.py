"""The DHT's RPC messages on the wire, decoded strictly.

A message is one whole link payload (the link frames it; no extra transport, issue 9).
Wire format, version 1 (integers big-endian)::

    u8 version | u8 type | u32 request_id | body

    PING        (empty)                      liveness (a full bucket's oldest entry)
    PONG        (empty)
    FIND_NODE   target[32]
    NODES       u8 n | n * contact           the answer to FIND_NODE
    FIND_VALUE  u8 record type | key[32]
    VALUE       u8 n | n * (u16 len | record) | u8 m | m * contact
    STORE       u16 len | record
    STORED      u8 status

    contact     node_id[32] | u8 len | address (printable ASCII; len 0: none)

A response echoes its request's id (Kademlia's random RPC id, section 2.3, which lets the
requester match answers and drop unsolicited ones).  Decoding raises
:class:`~zmesh.errors.RemoteProtocolError` for anything malformed: an unknown version, type
or status, a count or length over its bound, a truncated field, trailing bytes, a non-ASCII
address.  Records are parsed (:func:`~zmesh.dht.records.pull_record`) but not verified:
that costs signature checks, which the record store budgets per peer.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from ..codec import Buffer, BufferReadError, push_uint, push_vector
from ..errors import CloseCode, RemoteProtocolError
from .records import MAX_RECORD_SIZE, Record, RecordType, decode_record
from .routing import ID_SIZE, Contact

DHT_VERSION = 1
MAX_CONTACTS = 32  # per answer (we send k = 20)
MAX_RECORDS = 4  # per VALUE answer
MAX_ADDRESS = 255
CONTACT_ENCODINGS = 1 << 15  # contacts whose encoding is remembered (bounded, process-wide)
CONTACT_CACHE = 16384  # decoded contacts remembered by their encoding (bounded)
HEADER = 6
CONTACT_MAX = ID_SIZE + 1 + MAX_ADDRESS
MAX_MESSAGE_SIZE = HEADER + 1 + MAX_RECORDS * (2 + MAX_RECORD_SIZE) + 1 + MAX_CONTACTS * CONTACT_MAX


class MessageType(IntEnum):
    PING = 1
    PONG = 2
    FIND_NODE = 3
    NODES = 4
    FIND_VALUE = 5
    VALUE = 6
    STORE = 7
    STORED = 8


class StoreStatus(IntEnum):
    STORED = 0  # stored or updated
    DUPLICATE = 1  # we hold it (or a newer one) already
    REFUSED = 2  # a bound or a budget: try another node
    INVALID = 3  # it did not verify


_MAX_STATUS = max(StoreStatus)


@dataclass(frozen=True, slots=True)
class Ping:
    request_id: int


@dataclass(frozen=True, slots=True)
class Pong:
    request_id: int


@dataclass(frozen=True, slots=True)
class FindNode:
    request_id: int
    target: bytes


@dataclass(frozen=True, slots=True)
class Nodes:
    request_id: int
    contacts: tuple[Contact, ...]


@dataclass(frozen=True, slots=True)
class FindValue:
    request_id: int
    record_type: RecordType
    key: bytes


@dataclass(frozen=True, slots=True)
class Value:
    request_id: int
    records: tuple[Record, ...]
    contacts: tuple[Contact, ...]


@dataclass(frozen=True, slots=True)
class Store:
    request_id: int
    record: Record


@dataclass(frozen=True, slots=True)
class Stored:
    request_id: int
    status: StoreStatus


Message = Ping | Pong | FindNode | Nodes | FindValue | Value | Store | Stored


def _push_contacts(contacts: tuple[Contact, ...]) -> bytes:
    """The contact list of a NODES or VALUE body (the hot path of every lookup answer):
    each contact's encoding is remembered by (id, address), checked once.  Raises
    ValueError for more than :data:`MAX_CONTACTS`, a malformed id or an address no peer
    would accept."""
    if len(contacts) > MAX_CONTACTS:
        raise ValueError(f"at most {MAX_CONTACTS} contacts per answer")
    known = _encodings
    parts = [bytes((len(contacts),))]
    for c in contacts:
        key = (c.node_id, c.address)
        raw = known.get(key)
        if raw is None:
            raw = _contact_bytes(c.node_id, c.address)
            if len(known) >= CONTACT_ENCODINGS:
                known.clear()
            known[key] = raw
        parts.append(raw)
    return b"".join(parts)


_encodings: dict[tuple[bytes, str | None], bytes] = {}  # (id, address) -> its encoding


def _contact_bytes(node_id: bytes, address: str | None) -> bytes:
    """One contact as sent: ``node_id[32] | u8 len | address``.  Raises ValueError for a
    malformed id or an address no peer would accept."""
    if len(node_id) != ID_SIZE:
        raise ValueError(f"ids are {ID_SIZE} bytes")
    if address is None:
        return node_id + b"\x00"
    try:
        raw = address.encode("ascii")
    except UnicodeEncodeError:
        raw = b""
    if not _valid_address(raw):
        raise ValueError("addresses are 1 to 255 printable ASCII characters")
    return node_id + bytes((len(raw),)) + raw


def encode_message(msg: Message) -> bytes:
    """Serialize one message.  Raises ValueError for one no peer would accept (too many
    contacts or records, a malformed id or address)."""
    match msg:
        case Ping():
            kind, body = MessageType.PING, b""
        case Pong():
            kind, body = MessageType.PONG, b""
        case FindNode(_, target):
            kind, body = MessageType.FIND_NODE, _check_id(target)
        case Nodes(_, contacts):
            kind, body = MessageType.NODES, _push_contacts(contacts)
        case FindValue(_, record_type, key):
            kind, body = MessageType.FIND_VALUE, bytes([record_type]) + _check_id(key)
        case Value(_, records, contacts):
            if len(records) > MAX_RECORDS:
                raise ValueError(f"at most {MAX_RECORDS} records per answer")
            encoded = [push_vector(r.encode(), 2) for r in records]
            body = b"".join((bytes([len(records)]), *encoded, _push_contacts(contacts)))
            kind = MessageType.VALUE
        case Store(_, record):
            kind, body = MessageType.STORE, push_vector(record.encode(), 2)
        case Stored(_, status):
            kind, body = MessageType.STORED, bytes([status])
    if not 0 <= msg.request_id < 2**32:
        raise ValueError("request ids are 32-bit")
    return bytes([DHT_VERSION, kind]) + push_uint(msg.request_id, 4) + body


def _check_id(node_id: bytes) -> bytes:
    if len(node_id) != ID_SIZE:
        raise ValueError(f"ids are {ID_SIZE} bytes")
    return node_id


_PRINTABLE = bytes(range(0x21, 0x7F))


def _valid_address(raw: bytes) -> bool:
    """1 to 255 bytes, each printable ASCII (0x21 to 0x7E): nothing left once those go."""
    return 0 < len(raw) <= MAX_ADDRESS and not raw.translate(None, _PRINTABLE)


_contacts: dict[bytes, Contact] = {}  # a contact's encoding -> it, decoded (bounded)


def _pull_contacts(buf: Buffer) -> tuple[Contact, ...]:
    """The contact list that ends a NODES or VALUE body: it takes the rest of ``buf`` and
    must fill it exactly.  Parsed by slicing (the hot path of every lookup answer); a
    contact seen before (answers name the same nodes again and again) is the same
    immutable :class:`Contact`, remembered by its encoding (at most :data:`CONTACT_CACHE`,
    then afresh)."""
    data = buf.pull_rest()
    end = len(data)
    if not end:
        raise BufferReadError("truncated input")
    n = data[0]
    if n > MAX_CONTACTS:
        raise RemoteProtocolError(f"{n} contacts in one answer", CloseCode.RESOURCE)
    known = _contacts
    contacts = []
    pos = 1
    for _ in range(n):
        at = pos + ID_SIZE
        if at >= end:
            raise BufferReadError("truncated input")
        stop = at + 1 + data[at]  # an address is at most 255 = MAX_ADDRESS bytes
        if stop > end:
            raise BufferReadError("truncated input")
        encoded = data[pos:stop]
        contact = known.get(encoded)
        if contact is None:
            address = None
            if stop > at + 1:
                raw = data[at + 1 : stop]
                if raw.translate(None, _PRINTABLE):
                    raise RemoteProtocolError("contact address is not printable ASCII")
                address = raw.decode("ascii")
            contact = Contact(data[pos:at], address, 0.0)
            if len(known) >= CONTACT_CACHE:
                known.clear()
            known[encoded] = contact
        contacts.append(contact)
        pos = stop
    if pos != end:
        raise RemoteProtocolError(f"{end - pos} unexpected trailing bytes")
    return tuple(contacts)


def _pull_record_type(buf: Buffer) -> RecordType:
    raw = buf.pull_uint8()
    if raw not in (RecordType.NODE, RecordType.PROVIDER):
        raise RemoteProtocolError(f"unknown record type {raw}")
    return RecordType(raw)


def decode_message(
    data: bytes, record_decoder: Callable[[bytes], Record] = decode_record
) -> Message:
    """Parse one message (records unverified; decoded contacts have ``seen`` 0: we have
    not heard from them).  ``record_decoder`` parses each record's bytes (the simulator
    passes one that shares a single immutable Record among its nodes).  Raises
    RemoteProtocolError if it is malformed or oversized."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise RemoteProtocolError("DHT message is oversized", CloseCode.RESOURCE)
    buf = Buffer(data)
    version = buf.pull_uint8()
    if version != DHT_VERSION:
        raise RemoteProtocolError(f"unknown DHT version {version}")
    raw_type = buf.pull_uint8()
    request_id = buf.pull_uint32()
    msg: Message
    match raw_type:
        case MessageType.PING:
            msg = Ping(request_id)
        case MessageType.PONG:
            msg = Pong(request_id)
        case MessageType.FIND_NODE:
            msg = FindNode(request_id, buf.pull_bytes(ID_SIZE))
        case MessageType.NODES:
            msg = Nodes(request_id, _pull_contacts(buf))
        case MessageType.FIND_VALUE:
            record_type = _pull_record_type(buf)
            msg = FindValue(request_id, record_type, buf.pull_bytes(ID_SIZE))
        case MessageType.VALUE:
            n = buf.pull_uint8()
            if n > MAX_RECORDS:
                raise RemoteProtocolError(f"{n} records in one answer", CloseCode.RESOURCE)
            records = tuple(record_decoder(buf.pull_vector(2, MAX_RECORD_SIZE)) for _ in range(n))
            msg = Value(request_id, records, _pull_contacts(buf))
        case MessageType.STORE:
            msg = Store(request_id, record_decoder(buf.pull_vector(2, MAX_RECORD_SIZE)))
        case MessageType.STORED:
            raw_status = buf.pull_uint8()
            if raw_status > _MAX_STATUS:
                raise RemoteProtocolError(f"unknown store status {raw_status}")
            msg = Stored(request_id, StoreStatus(raw_status))
        case _:
            raise RemoteProtocolError(f"unknown DHT message type {raw_type}")
    buf.expect_eof()
    return msg
