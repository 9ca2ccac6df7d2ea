"""Malformed HTTP requests for the push service's tests (hypothesis-generated)."""

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HTTP_GARBAGE = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.builds(
        lambda method, path, headers, body: (
            f"{method} {path} HTTP/1.1\r\nHost: x\r\n".encode() + headers + b"\r\n" + body
        ),
        st.sampled_from(["POST", "GET", "DELETE", "PUT", "P\x00ST", ""]),
        st.sampled_from(["/wpush/zzz", "/m/zzz", "/", "*", "/wpush/", "//"]),
        st.lists(
            st.sampled_from([
                b"TTL: -5\r\n", b"TTL: 99999999999999999999\r\n", b"Urgency: now\r\n",
                b"Topic: " + b"a" * 40 + b"\r\n", b"Authorization: vapid t=a.b.c, k=zz\r\n",
                b"Content-Length: 3\r\n", b"Content-Length: -1\r\n", b"Transfer-Encoding: chunked\r\n",
                b"Upgrade: websocket\r\nConnection: Upgrade\r\n", b"Sec-WebSocket-Version: 13\r\n",
                b"Content-Encoding: aes128gcm\r\n", b"\x00\xff: \r\n",
            ]),
            max_size=5,
        ).map(b"".join),
        st.binary(max_size=200),
    ),
)  # fmt: skip


def malformed_requests(n: int) -> list[bytes]:
    """``n`` malformed HTTP requests drawn from :data:`HTTP_GARBAGE`."""
    cases: list[bytes] = []

    @given(HTTP_GARBAGE)
    @settings(max_examples=n, database=None, suppress_health_check=list(HealthCheck))
    def collect(case: bytes) -> None:
        cases.append(case)

    collect()
    return cases[:n]


async def send_raw(port: int, data: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        writer.write_eof()
        await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()
