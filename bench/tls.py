"""Throughput of the TLS client inside circuits (zmesh.runtime.tls, D51) on CPython.

    PYTHONPATH=. python bench/tls.py [--mb 20]

Runs tlslite-ng's client against CPython's ``ssl`` server over memory BIOs (no sockets, no
circuit: the TLS cost alone), once with the record layer on tlslite-ng's own pure-Python
AEADs and once on pyca's (what zmesh uses on CPython), for TLS 1.3 and TLS 1.2, and prints
the handshake time and MB/s of server-to-client data.  The figure inside the page, against
plain http through the same circuit, comes from tests/browser/test_https_page.py.
"""

import argparse
import ssl
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tlsca
from tlslite import recordlayer
from tlslite.utils import cipherfactory

from zmesh.runtime import tls

CHUNK = 64 * 1024


def run(mb: int, version: ssl.TLSVersion, pure: bool) -> tuple[float, float, str]:
    """(handshake s, MB/s, cipher) for ``mb`` MiB from server to client."""
    ca = tlsca.make_ca()
    ctx = ca.issue("127.0.0.1").context()
    ctx.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ctx.wrap_bio(incoming, outgoing, server_side=True)
    if pure:
        recordlayer.createAESGCM = cipherfactory.createAESGCM
        recordlayer.createCHACHA20 = cipherfactory.createCHACHA20
    else:
        recordlayer.createAESGCM = tls._create_aes_gcm
        recordlayer.createCHACHA20 = tls._create_chacha20
    client = tls.TlsClient("127.0.0.1")
    started = time.perf_counter()
    server_done = False
    while True:
        done = client.handshake()
        incoming.write(client.data_to_send())
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except ssl.SSLWantReadError:
                pass
        client.receive_data(outgoing.read())
        if done and server_done:
            break
    handshake = time.perf_counter() - started
    payload = bytes(CHUNK)
    total = mb << 20
    received = 0
    started = time.perf_counter()
    while received < total:
        server.write(payload)
        client.receive_data(outgoing.read())
        received += len(client.read())
    rate = total / (time.perf_counter() - started) / 1e6
    return handshake, rate, client.cipher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=20)
    args = parser.parse_args()
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        for pure in (True, False):
            mb = max(1, args.mb // 20) if pure else args.mb
            handshake, rate, cipher = run(mb, version, pure)
            aead = "tlslite-ng pure Python" if pure else "pyca (zmesh)"
            print(
                f"{version.name}  {cipher:18} record layer {aead:24} "
                f"handshake {handshake * 1000:6.1f} ms  {rate:7.2f} MB/s ({mb} MiB)"
            )
    recordlayer.createAESGCM = tls._create_aes_gcm
    recordlayer.createCHACHA20 = tls._create_chacha20


if __name__ == "__main__":
    main()
