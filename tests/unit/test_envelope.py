"""The wire format: a job's envelope round-trips; anything else is poison with a reason."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        (b'{"kind": "test.noop"}', "job_id is not a string"),
        (b'{"job_id": "not-a-uuid", "kind": "test.noop"}', "is not a UUID"),
        (b'{"job_id": 7, "kind": "test.noop"}', "job_id is not a string"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b"}', "non-empty string"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b", "kind": "k", "attempt": "x"}', "attempt is not"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b", "kind": "k", "attempt": 1e400}', "attempt is not"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b", "kind": "k", "attempt": 99999999999}',
         "attempt is not"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b", "kind": "k", "attempt": -1}', "attempt is not"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b", "kind": "k", "attempt": true}', "attempt is not"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b", "kind": "k", "attempt": 1' + b"0" * 5000 + b"}",
         "larger than"),
        (b"[" * 3000 + b"]" * 3000, "larger than"),
        (b"[" * 2000 + b"]" * 2000, "undecodable"),  # nested past the parser's recursion limit
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b", "kind": ""}', "non-empty string"),
        (b'{"job_id": "8c5b8a3e-2f0b-4f7e-9a53-0c9f6e1c2d3b", "kind": 7}', "non-empty string"),
    ],
)
def test_garbage_is_poison_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        decode(body)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({}, optional={"job_id": JSON_VALUES | st.uuids().map(str), "kind": JSON_VALUES,
                                        "attempt": JSON_VALUES}).map(lambda value: json.dumps(value).encode()),
))
def test_any_body_decodes_or_is_poison_never_another_error(body: bytes) -> None:
    try:
        envelope = decode(body)
    except PoisonMessage as poison:
        assert str(poison)
    else:
        assert 0 <= envelope.attempt <= 2**31 - 1 and envelope.kind


def test_from_row_takes_the_id_kind_and_attempt_of_a_job_row() -> None:
    job_id = uuid.uuid4()
    row = {"id": job_id, "kind": "email.send", "attempt": 3, "service": "email", "priority": 5}
    assert Envelope.from_row(row) == Envelope(job_id, "email.send", 3)
