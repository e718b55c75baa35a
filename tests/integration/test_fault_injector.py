"""The wire-fault injector (tests/support/faults.py) in front of moto, seen by a raw client:
each fault reaches the client as it claims, and only when asked for."""

from __future__ import annotations

import functools
import socket
import threading
import time
import uuid
from typing import Any

import botocore.exceptions
import pytest

from tests.support.clients import boto3_client, make_bucket
from tests.support.faults import FaultInjector, Rule
from tests.support.moto import MotoServer


@pytest.fixture
def obj(moto: MotoServer) -> tuple[str, bytes]:
    """A bucket/key holding 1000 known bytes."""
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    make_bucket(moto.endpoint_url, bucket, moto.access_key, moto.secret_key)
    body = bytes(range(250)) * 4
    boto3_client(moto).put_object(Bucket=bucket, Key="k", Body=body)
    return f"{bucket}/k", body


@functools.cache
def _client(moto: MotoServer) -> Any:
    return boto3_client(moto)


def _raw(
    moto: MotoServer, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[bytes, BaseException | None]:
    """Send one request (presigned for ``bucket/key``) by hand; return every byte received and
    how the connection ended."""
    bucket, _, key = target.partition("/")
    operation = {"GET": "get_object", "HEAD": "head_object", "PUT": "put_object"}[method]
    url = _client(moto).generate_presigned_url(operation, Params={"Bucket": bucket, "Key": key})
    lines = [
        f"{method} {url.removeprefix(moto.endpoint_url)} HTTP/1.1",
        f"Host: 127.0.0.1:{moto.port}",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    received = b""
    with socket.create_connection(("127.0.0.1", moto.port), timeout=10) as sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:
            return received, exc
    return received, None


def _status(received: bytes) -> int:
    return int(received.split(b" ", 2)[1])


def test_inactive_by_default(moto: MotoServer, obj: tuple[str, bytes]) -> None:
    received, ended = _raw(moto, "GET", obj[0])
    assert ended is None and _status(received) == 200 and received.endswith(obj[1])
    assert moto.faults.records == []


def test_500_and_503_are_s3_errors(moto: MotoServer, faults: FaultInjector, obj: tuple[str, bytes]) -> None:
    faults.add_rule(Rule("500", method="GET", applied=False))
    faults.add_rule(Rule("503", method="GET"))
    first, _ = _raw(moto, "GET", obj[0])
    second, _ = _raw(moto, "GET", obj[0])
    third, _ = _raw(moto, "GET", obj[0])  # the one-shot rules are used up
    assert _status(first) == 500 and b"<Code>InternalError</Code>" in first
    assert _status(second) == 503 and b"<Code>SlowDown</Code>" in second
    assert _status(third) == 200 and third.endswith(obj[1])
    assert faults.counts() == {"500": 1, "503": 1}


def test_reset_promises_the_whole_body_and_sends_half(
    moto: MotoServer, faults: FaultInjector, obj: tuple[str, bytes]
) -> None:
    faults.add_rule(Rule("reset", key=obj[0]))
    received, ended = _raw(moto, "GET", obj[0])
    head, _, body = received.partition(b"\r\n\r\n")
    assert _status(received) == 200 and b"Content-Length: 1000" in head
    assert body == obj[1][:500]
    assert isinstance(ended, ConnectionResetError)


def test_reset_of_an_empty_answer_cuts_its_headers(
    moto: MotoServer, faults: FaultInjector, obj: tuple[str, bytes]
) -> None:
    faults.add_rule(Rule("reset", method="PUT"))
    bucket = obj[0].split("/")[0]
    received, ended = _raw(moto, "PUT", f"{bucket}/new", body=b"x")
    assert received.startswith(b"HTTP/1.1 200") and b"\r\n\r\n" not in received
    assert isinstance(ended, ConnectionResetError)
    assert boto3_client(moto).get_object(Bucket=bucket, Key="new")["Body"].read() == b"x"  # moto acted


@pytest.mark.parametrize("applied", [False, True])
def test_drop_closes_without_an_answer(
    moto: MotoServer, faults: FaultInjector, obj: tuple[str, bytes], applied: bool
) -> None:
    bucket = obj[0].split("/")[0]
    faults.add_rule(Rule("drop", method="PUT", applied=applied))
    received, _ = _raw(moto, "PUT", f"{bucket}/dropped", body=b"y")
    assert received == b""
    objects = boto3_client(moto).list_objects_v2(Bucket=bucket).get("Contents", [])
    assert ("dropped" in {o["Key"] for o in objects}) is applied
    assert [(r.kind, r.method, r.applied) for r in faults.records] == [("drop", "PUT", applied)]


def test_delay_answers_late(moto: MotoServer, faults: FaultInjector, obj: tuple[str, bytes]) -> None:
    faults.delay = 0.6
    faults.add_rule(Rule("delay"))
    started = time.monotonic()
    received, _ = _raw(moto, "GET", obj[0])
    assert time.monotonic() - started >= 0.6 and received.endswith(obj[1])


def test_conditionals_stripped_or_rejected(
    moto: MotoServer, faults: FaultInjector, obj: tuple[str, bytes]
) -> None:
    client = boto3_client(moto)
    bucket, key = obj[0].split("/")
    with pytest.raises(botocore.exceptions.ClientError) as refused:  # moto honours If-None-Match
        client.put_object(Bucket=bucket, Key=key, Body=b"new", IfNoneMatch="*")
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    faults.add_rule(Rule("reject-conditional", times=None))
    faults.add_rule(Rule("strip-conditional", times=None))  # never reached: the first rule wins
    with pytest.raises(botocore.exceptions.ClientError) as rejected:
        client.put_object(Bucket=bucket, Key=key, Body=b"new", IfNoneMatch="*")
    assert rejected.value.response["Error"]["Code"] == "NotImplemented"
    assert rejected.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    client.put_object(Bucket=bucket, Key="plain", Body=b"p")  # unconditional requests pass
    faults.off()
    faults.add_rule(Rule("strip-conditional", times=None))
    client.put_object(Bucket=bucket, Key=key, Body=b"new", IfNoneMatch="*")  # ignored: overwrites
    client.put_object(Bucket=bucket, Key=key, Body=b"newer", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"newer"
    assert faults.counts() == {"reject-conditional": 1, "strip-conditional": 2}


def test_share_is_seeded(moto: MotoServer, faults: FaultInjector, obj: tuple[str, bytes]) -> None:
    def run() -> list[int]:
        faults.configure(0.5, ["503"], seed=7)
        statuses = [_status(_raw(moto, "HEAD", obj[0])[0]) for _ in range(40)]
        faults.off()
        return statuses

    first, second = run(), run()
    assert first == second and 10 <= first.count(503) <= 30 and set(first) == {200, 503}


def test_blackhole_holds_until_released(
    moto: MotoServer, faults: FaultInjector, obj: tuple[str, bytes]
) -> None:
    outcome: list[Any] = []
    faults.blackhole()
    client = threading.Thread(target=lambda: outcome.append(_raw(moto, "GET", obj[0])))
    client.start()
    deadline = time.monotonic() + 10
    while faults.held == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert faults.held == 1 and outcome == []  # waiting, unanswered
    faults.release()
    client.join(10)
    assert outcome and outcome[0][0] == b""  # dropped, never answered
    received, _ = _raw(moto, "GET", obj[0])
    assert received.endswith(obj[1])
