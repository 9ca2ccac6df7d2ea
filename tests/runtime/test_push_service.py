"""zmesh push-service: one test per RFC 8030 / RFC 8292 rule it enforces, its bounds, and
autopush's WebSocket protocol, on :class:`PushService` directly (virtual time, no sockets).
Over real sockets: tests/runtime/test_push_wire.py."""

import json

import pytest
from py_vapid import Vapid02
from py_vapid.jwt import sign as jwt_sign

from zmesh.runtime.http import HttpError
from zmesh.runtime.push import b64url_encode
from zmesh.runtime.push_service import (
    MAX_TTL,
    WS_PROTOCOL_ERROR,
    WS_TRY_AGAIN,
    PushLimits,
    PushService,
    PushStore,
    TokenBuckets,
    WsSession,
    verify_vapid,
)

ORIGIN = "http://push.test:8000"
NOW = 1_800_000_000.0
CHANNEL = "5c1b2c3d-0000-4000-8000-00000000000{}"
BODY = b"\x01" * 100
ENC = {"content-encoding": "aes128gcm"}


_STORES: list[PushStore] = []


@pytest.fixture(autouse=True)
def _close_stores():
    yield
    while _STORES:
        _STORES.pop().close()


def service(**limits: int | float) -> PushService:
    store = PushStore(None)
    _STORES.append(store)
    return PushService(store, ORIGIN, PushLimits(**limits))  # type: ignore[arg-type]


def hello(svc: PushService, uaid: str | None = None, peer: str = "p") -> WsSession:
    session = WsSession(svc, peer)
    message: dict[str, object] = {"messageType": "hello", "use_webpush": True, "broadcasts": {}}
    if uaid:
        message["uaid"] = uaid
    session.receive_text(json.dumps(message), NOW)
    reply = json.loads(session.outbox.pop(0))
    assert reply["status"] == 200 and reply["use_webpush"] is True
    return session


def register(session: WsSession, n: int = 0, key: bytes | None = None) -> str:
    message: dict[str, object] = {"messageType": "register", "channelID": CHANNEL.format(n)}
    if key is not None:
        message["key"] = b64url_encode(key) + "="  # Firefox pads it
    session.receive_text(json.dumps(message), NOW)
    reply = json.loads(session.outbox.pop())
    assert reply["status"] == 200, reply
    endpoint: str = reply["pushEndpoint"]
    assert endpoint.startswith(ORIGIN + "/wpush/")
    return endpoint.removeprefix(ORIGIN + "/wpush/")


def subscribed(**limits: int | float) -> tuple[PushService, WsSession, str]:
    svc = service(**limits)
    session = hello(svc)
    return svc, session, register(session)


def push(
    svc: PushService, token: str, headers: dict[str, str], body: bytes = b"", now: float = NOW
):
    return svc.handle_http("POST", f"/wpush/{token}", headers, body, now)


def status_of(svc: PushService, token: str, headers: dict[str, str], body: bytes = b"") -> int:
    try:
        return push(svc, token, headers, body).status
    except HttpError as exc:
        return exc.status


def vapid_header(key: Vapid02, claims: dict[str, object]) -> str:
    return key.sign(claims)["Authorization"]


def good_claims() -> dict[str, object]:
    return {"aud": ORIGIN, "exp": int(NOW) + 3600, "sub": "mailto:a@example.com"}


def raw_public(key: Vapid02) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def new_key() -> Vapid02:
    key = Vapid02()
    key.generate_keys()
    return key


# -- RFC 8030 --------------------------------------------------------------------------


def test_push_is_201_with_location_and_reaches_the_connected_client() -> None:
    svc, session, token = subscribed()
    response = push(svc, token, {"ttl": "60", **ENC}, BODY)
    assert response.status == 201
    fields = dict(response.headers)
    assert fields["Location"].startswith(ORIGIN + "/m/") and fields["TTL"] == "60"
    note = json.loads(session.outbox.pop())
    assert note["messageType"] == "notification" and note["channelID"] == CHANNEL.format(0)
    assert note["headers"] == {"encoding": "aes128gcm"}
    assert note["version"] == fields["Location"].rsplit("/", 1)[1]


def test_ttl_is_required() -> None:  # RFC 8030 section 5.2
    svc, _, token = subscribed()
    assert status_of(svc, token, {}) == 400


@pytest.mark.parametrize("ttl", ["-1", "1.5", "ten", "", "99999999999"])
def test_ttl_must_be_a_non_negative_integer(ttl: str) -> None:
    svc, _, token = subscribed()
    assert status_of(svc, token, {"ttl": ttl}) == 400


def test_a_long_ttl_is_reduced_and_the_reduced_value_answered() -> None:  # 5.2
    svc, _, token = subscribed()
    assert dict(push(svc, token, {"ttl": "999999999"}).headers)["TTL"] == str(MAX_TTL)


@pytest.mark.parametrize("urgency", ["urgent", "HIGH", "", "low,high"])
def test_urgency_must_be_one_of_the_four(urgency: str) -> None:  # 5.3
    svc, _, token = subscribed()
    assert status_of(svc, token, {"ttl": "5", "urgency": urgency}) == 400
    for good in ("very-low", "low", "normal", "high"):
        assert status_of(svc, token, {"ttl": "5", "urgency": good}) == 201


@pytest.mark.parametrize("topic", ["a" * 33, "has space", "plus+", "slash/", "pad=", ""])
def test_topic_is_at_most_32_base64url_characters(topic: str) -> None:  # 5.4
    svc, _, token = subscribed()
    assert status_of(svc, token, {"ttl": "5", "topic": topic}) == 400
    assert status_of(svc, token, {"ttl": "5", "topic": "A-_z" * 8}) == 201


def test_a_topic_replaces_the_pending_message_of_the_same_topic() -> None:  # 5.4
    svc = service()
    session = hello(svc)
    token = register(session)
    uaid = session.uaid
    assert uaid is not None
    svc.detach(session)  # offline: messages wait
    first = push(svc, token, {"ttl": "60", "topic": "t1", **ENC}, b"\x01" * 30)
    push(svc, token, {"ttl": "60", "topic": "other", **ENC}, b"\x02" * 30)
    push(svc, token, {"ttl": "60", "topic": "t1", **ENC}, b"\x03" * 30)
    pending = svc.pending(uaid, NOW)
    assert [m.data[0] for m in pending] == [2, 3]
    first_id = dict(first.headers)["Location"].rsplit("/", 1)[1]
    assert first_id not in {m.id for m in pending}


def test_body_over_4096_bytes_is_413() -> None:  # RFC 8030 section 7.2
    svc, _, token = subscribed()
    assert status_of(svc, token, {"ttl": "5", **ENC}, b"\x00" * 4097) == 413
    assert status_of(svc, token, {"ttl": "5", **ENC}, b"\x00" * 4096) == 201


def test_a_payload_must_be_aes128gcm() -> None:  # RFC 8291 section 4
    svc, _, token = subscribed()
    assert status_of(svc, token, {"ttl": "5"}, BODY) == 415
    assert status_of(svc, token, {"ttl": "5", "content-encoding": "aesgcm"}, BODY) == 415


def test_unknown_subscription_is_404_and_an_ended_one_410() -> None:
    svc, session, token = subscribed()
    assert status_of(svc, "never-issued", {"ttl": "5"}) == 404
    session.receive_text(
        json.dumps({"messageType": "unregister", "channelID": CHANNEL.format(0)}), NOW
    )
    assert json.loads(session.outbox.pop())["status"] == 200
    assert status_of(svc, token, {"ttl": "5"}) == 410


def test_delete_withdraws_a_pending_message_then_404() -> None:  # RFC 8030 section 6.1
    svc, session, token = subscribed()
    svc.detach(session)
    location = dict(push(svc, token, {"ttl": "60"}).headers)["Location"]
    path = location.removeprefix(ORIGIN)
    assert svc.handle_http("DELETE", path, {}, b"", NOW).status == 204
    with pytest.raises(HttpError) as err:
        svc.handle_http("DELETE", path, {}, b"", NOW)
    assert err.value.status == 404
    assert session.uaid is not None and svc.pending(session.uaid, NOW) == []


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/wpush/x"), ("POST", "/m/x"), ("PUT", "/wpush/x")]
)
def test_wrong_method_is_405(method: str, path: str) -> None:
    with pytest.raises(HttpError) as err:
        service().handle_http(method, path, {}, b"", NOW)
    assert err.value.status == 405


def test_messages_wait_until_acked_or_past_their_ttl() -> None:
    svc, session, token = subscribed()
    uaid = session.uaid
    assert uaid is not None
    svc.detach(session)
    push(svc, token, {"ttl": "10"})
    push(svc, token, {"ttl": "100"})
    again = hello(svc, uaid)  # reconnect: both delivered, neither gone before the ack
    notes = [json.loads(t) for t in again.outbox]
    assert len(notes) == 2
    assert len(svc.pending(uaid, NOW + 5)) == 2
    assert len(svc.pending(uaid, NOW + 50)) == 1  # the first passed its TTL
    ack = {"messageType": "ack", "updates": [
        {"channelID": n["channelID"], "version": n["version"], "code": 100} for n in notes
    ]}  # fmt: skip
    again.receive_text(json.dumps(ack), NOW + 50)
    assert svc.pending(uaid, NOW + 50) == []


def test_ttl_zero_is_delivered_now_or_never() -> None:  # RFC 8030 section 5.2
    svc, session, token = subscribed()
    assert session.uaid is not None
    push(svc, token, {"ttl": "0"})
    assert json.loads(session.outbox.pop())["messageType"] == "notification"
    svc.detach(session)
    assert push(svc, token, {"ttl": "0"}).status == 201
    assert len(svc.pending(session.uaid, NOW)) == 1  # only the delivered one, until acked


# -- RFC 8292 VAPID --------------------------------------------------------------------


def restricted() -> tuple[PushService, str, Vapid02]:
    key = new_key()
    svc = service()
    session = hello(svc)
    return svc, register(session, key=raw_public(key)), key


def test_restricted_subscription_takes_its_keys_signature() -> None:
    svc, token, key = restricted()
    auth = vapid_header(key, good_claims())
    assert status_of(svc, token, {"ttl": "5", "authorization": auth}) == 201


def test_restricted_subscription_without_a_token_is_401() -> None:  # RFC 8292 section 4.2
    svc, token, _ = restricted()
    assert status_of(svc, token, {"ttl": "5"}) == 401


def test_another_key_is_403() -> None:  # RFC 8292 section 4.2
    svc, token, _ = restricted()
    auth = vapid_header(new_key(), good_claims())
    assert status_of(svc, token, {"ttl": "5", "authorization": auth}) == 403


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "http://other.test:8000", "exp": int(NOW) + 60, "sub": "mailto:a@b.c"},
        {"aud": ORIGIN + "/", "exp": int(NOW) + 60, "sub": "mailto:a@b.c"},
        {"aud": ORIGIN, "exp": int(NOW) - 1, "sub": "mailto:a@b.c"},
        {"aud": ORIGIN, "exp": int(NOW) + 86401, "sub": "mailto:a@b.c"},
        {"aud": ORIGIN, "exp": "soon", "sub": "mailto:a@b.c"},
        {"aud": ORIGIN, "exp": int(NOW) + 60, "sub": ""},
        {"aud": ORIGIN, "exp": int(NOW) + 60},
    ],
    ids=["aud-other", "aud-path", "expired", "exp-over-24h", "exp-string", "sub-empty", "no-sub"],
)
def test_bad_claims_are_401(claims: dict[str, object]) -> None:  # RFC 8292 section 2
    svc, token, key = restricted()
    public = b64url_encode(raw_public(key))
    auth = f"vapid t={jwt_sign(claims, key.private_key)}, k={public}"
    assert status_of(svc, token, {"ttl": "5", "authorization": auth}) == 401


def test_bad_signature_alg_and_syntax_are_401() -> None:
    svc, token, key = restricted()
    good = vapid_header(key, good_claims())
    t = good.split("t=", 1)[1].split(",", 1)[0]
    k = good.rsplit("k=", 1)[1]
    head, claims, sig = t.split(".")
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    hs256 = b64url_encode(b'{"typ":"JWT","alg":"HS256"}')
    for auth in [
        f"vapid t={head}.{claims}.{flipped}, k={k}",
        f"vapid t={hs256}.{claims}.{sig}, k={k}",
        f"vapid t={t}",
        f"vapid k={k}",
        f"WebPush {t}",
        f"vapid t={t}, k=notakey",
        f"vapid t={head}.{claims}, k={k}",
        "vapid",
        f"vapid t={t}, t={t}, k={k}",
    ]:
        assert status_of(svc, token, {"ttl": "5", "authorization": auth}) == 401, auth


def test_an_unrestricted_subscription_still_checks_a_token_it_is_given() -> None:
    svc, _, token = subscribed()
    bad = vapid_header(new_key(), {**good_claims(), "aud": "http://elsewhere"})
    assert status_of(svc, token, {"ttl": "5", "authorization": bad}) == 401
    good = vapid_header(new_key(), good_claims())
    assert status_of(svc, token, {"ttl": "5", "authorization": good}) == 201


def test_verify_vapid_returns_the_signer() -> None:
    key = new_key()
    assert verify_vapid(vapid_header(key, good_claims()), ORIGIN, NOW) == raw_public(key)


# -- bounds ----------------------------------------------------------------------------


def test_pending_messages_per_subscription_are_capped_429() -> None:
    svc, session, token = subscribed(messages_per_subscription=3)
    svc.detach(session)
    for _ in range(3):
        push(svc, token, {"ttl": "60"})
    assert status_of(svc, token, {"ttl": "60"}) == 429
    assert status_of(svc, token, {"ttl": "60", "topic": "x"}) == 429


def test_pending_messages_in_all_are_capped_503() -> None:
    svc = service(messages=4)
    session = hello(svc)
    tokens = [register(session, n) for n in range(3)]
    svc.detach(session)
    for token in tokens[:2]:
        push(svc, token, {"ttl": "60"})
        push(svc, token, {"ttl": "60"})
    assert status_of(svc, tokens[2], {"ttl": "60"}) == 503
    assert status_of(svc, tokens[2], {"ttl": "60"}) == 503
    # expired messages free the room
    assert push(svc, tokens[2], {"ttl": "60"}, now=NOW + 61).status == 201


def test_subscriptions_per_client_and_in_all_are_capped() -> None:
    svc = service(subscriptions_per_client=2, subscriptions=3)
    a = hello(svc, peer="a")
    register(a, 0)
    register(a, 1)
    a.receive_text(json.dumps({"messageType": "register", "channelID": CHANNEL.format(2)}), NOW)
    assert json.loads(a.outbox.pop())["status"] == 429
    b = hello(svc, peer="b")
    register(b, 3)
    b.receive_text(json.dumps({"messageType": "register", "channelID": CHANNEL.format(4)}), NOW)
    assert json.loads(b.outbox.pop())["status"] == 503


def test_tombstones_are_capped() -> None:
    svc = service(tombstones=2)
    session = hello(svc)
    tokens = [register(session, n) for n in range(4)]
    for n in range(4):
        unregister = {"messageType": "unregister", "channelID": CHANNEL.format(n)}
        session.receive_text(json.dumps(unregister), NOW + n)
    assert svc.store.count("SELECT COUNT(*) FROM subscriptions") == 2
    assert status_of(svc, tokens[0], {"ttl": "5"}) == 404  # forgotten: oldest first
    assert status_of(svc, tokens[3], {"ttl": "5"}) == 410


def test_token_buckets_budget_each_peer_and_are_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=3.0, size=2)
    assert [buckets.take("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b", 0.0)  # another peer has its own budget
    assert buckets.take("a", 1.0)  # a second later, one more
    buckets.take("c", 1.0)
    assert len(buckets._buckets) == 2


def test_websocket_messages_are_budgeted_per_peer() -> None:
    svc = service(rate=0.0, burst=5.0)
    session = hello(svc)
    for _ in range(4):
        session.receive_text("{}", NOW)
    assert session.close is None
    session.receive_text("{}", NOW)
    assert session.close is not None and session.close[0] == WS_TRY_AGAIN


# -- the WebSocket protocol ------------------------------------------------------------


def test_ping_is_answered_with_an_empty_object() -> None:
    svc = service()
    session = hello(svc)
    session.receive_text("{}", NOW)
    session.receive_text('{"messageType":"ping"}', NOW)
    assert session.outbox == ["{}", "{}"]


def test_hello_returns_a_known_uaid_and_replaces_an_unknown_one() -> None:
    svc = service()
    first = hello(svc, "unknown-uaid")
    assert first.uaid != "unknown-uaid"
    register(first)
    svc.detach(first)
    assert first.uaid is not None
    assert hello(svc, first.uaid).uaid == first.uaid


def test_a_second_hello_with_the_same_uaid_closes_the_first() -> None:
    svc, session, _ = subscribed()
    assert session.uaid is not None
    second = hello(svc, session.uaid)
    assert session.close is not None and second.close is None


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '"hello"',
        '{"messageType":"register","channelID":"5c1b2c3d-0000-4000-8000-000000000000"}',
        '{"messageType":"nonsense"}',
        '{"messageType":7}',
    ],
)
def test_garbage_before_or_instead_of_hello_closes(text: str) -> None:
    session = WsSession(service(), "p")
    session.receive_text(text, NOW)
    assert session.close is not None
    session.receive_text('{"messageType":"hello"}', NOW)  # nothing more is handled
    assert session.outbox == []


@pytest.mark.parametrize(
    "message",
    [
        {"messageType": "hello"},
        {"messageType": "register"},
        {"messageType": "register", "channelID": "not-a-uuid"},
        {"messageType": "register", "channelID": 5},
        {"messageType": "register", "channelID": CHANNEL.format(0), "key": 5},
        {"messageType": "ack", "updates": "x"},
        {"messageType": "ack", "updates": [{"channelID": CHANNEL.format(0)}]},
        {"messageType": "ack", "updates": [1]},
        {"messageType": "nack"},
        {"messageType": "unregister", "channelID": None},
        {"messageType": "broadcast_subscribe", "broadcasts": []},
    ],
)
def test_malformed_messages_after_hello_close(message: dict[str, object]) -> None:
    session = hello(service())
    session.receive_text(json.dumps(message), NOW)
    assert session.close is not None and session.close[0] == WS_PROTOCOL_ERROR


def test_register_with_a_bad_key_is_refused_not_closed() -> None:
    session = hello(service())
    for key in ["AAAA", b64url_encode(b"\x04" + b"\x00" * 64), "***"]:
        session.receive_text(
            json.dumps({"messageType": "register", "channelID": CHANNEL.format(0), "key": key}),
            NOW,
        )
        assert json.loads(session.outbox.pop())["status"] == 400
    assert session.close is None


def test_register_is_idempotent_and_a_changed_key_is_409() -> None:
    svc = service()
    session = hello(svc)
    token = register(session)
    assert register(session) == token
    key = b64url_encode(raw_public(new_key()))
    message = {"messageType": "register", "channelID": CHANNEL.format(0), "key": key}
    session.receive_text(json.dumps(message), NOW)
    assert json.loads(session.outbox.pop())["status"] == 409


def test_an_ack_for_another_clients_message_is_ignored() -> None:
    svc, a, token = subscribed()
    b = hello(svc)
    register(b, 1)
    svc.detach(a)
    push(svc, token, {"ttl": "60"})
    assert a.uaid is not None
    version = svc.pending(a.uaid, NOW)[0].id
    ack = {"updates": [{"channelID": CHANNEL.format(0), "version": version}]}
    b.receive_text(json.dumps({"messageType": "ack", **ack}), NOW)
    assert len(svc.pending(a.uaid, NOW)) == 1


def test_store_on_disk_keeps_subscriptions_across_restarts(tmp_path) -> None:
    path = tmp_path / "push.sqlite3"
    svc = PushService(PushStore(path), ORIGIN)
    session = hello(svc)
    token = register(session)
    svc.detach(session)
    push(svc, token, {"ttl": "600"})
    svc.store.close()
    assert path.stat().st_mode & 0o777 == 0o600
    again = PushService(PushStore(path), ORIGIN)
    _STORES.append(again.store)
    assert session.uaid is not None
    back = hello(again, session.uaid)
    assert back.uaid == session.uaid and len(back.outbox) == 1
