"""The wire format: a job's envelope round-trips; anything else is poison with a reason."""

from __future__ import annotations

import uuid

import pytest

from shared.messaging.envelope import Envelope, PoisonMessage, decode


def test_round_trip() -> None:
    envelope = Envelope(uuid.uuid4(), "email.send", 2)
    assert decode(envelope.encode()) == envelope


def test_attempt_defaults_to_zero() -> None:
    job_id = uuid.uuid4()
    assert decode(f'{{"job_id": "{job_id}", "kind": "k"}}'.encode()) == Envelope(job_id, "k", 0)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe\x00garbage", "undecodable"),
        (b"not json at all", "undecodable"),
        (b"", "undecodable"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'"a string"', "not a JSON object"),
        (b'{"kind": "test.noop"}', "lacks a valid job_id"),
        (b'{"job_id": "not-a-uuid", "kind": "test.noop"}', "lacks a valid job_id"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b"}', "lacks a valid job_id"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b", "kind": "k", "attempt": "x"}', "lacks a valid"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b", "kind": ""}', "non-empty string"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b", "kind": 7}', "non-empty string"),
    ],
)
def test_garbage_is_poison_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        decode(body)
