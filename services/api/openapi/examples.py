"""An example body for every request the API takes, shown in the OpenAPI document.

Swagger UI's "Try it out" starts from these, so each must be accepted as it stands: a test sends every
one to the api (`tests/integration/test_api_examples.py`). Keyed by the body model's name.
"""

from __future__ import annotations

from typing import Any

REQUEST_EXAMPLES: dict[str, Any] = {
    "UserIn": {"email": "ada@example.com", "name": "Ada Lovelace"},
    "EventIn": {"title": "Launch party", "location": "Main hall", "starts_at": "2031-05-01T18:00:00+02:00",
                "ends_at": "2031-05-01T21:00:00+02:00", "timezone": "Europe/Berlin"},
    "EventPatch": {"starts_at": "2031-05-02T18:00:00+02:00", "ends_at": "2031-05-02T21:00:00+02:00"},
    "ParticipantIn": {"email": "grace@example.com", "name": "Grace Hopper"},
    "JobRequest": {"kind": "email.welcome", "args": {"email": "ada@example.com", "name": "Ada Lovelace"},
                   "delay_seconds": 60},
    "BulkJobsRequest": {"state": "failed", "kind": "email.send"},
    "ParkedPurgeIn": {"older_than_seconds": 604800},
    "RecurringPatch": {"cron": "0 3 * * *", "timezone": "Europe/Berlin", "enabled": True},
    "RecurringPut": {"kind": "maintenance.cleanup_old_logs", "args": {}, "cron": "0 3 * * 0",
                     "timezone": "Europe/Berlin", "misfire_policy": "fire_once", "enabled": True},
    "JobBatchRequest": {"jobs": [
        {"kind": "email.welcome", "args": {"email": "ada@example.com", "name": "Ada Lovelace"},
         "idempotency_key": "welcome-ada"},
        {"kind": "email.welcome", "args": {"email": "grace@example.com", "name": "Grace Hopper"},
         "delay_seconds": 60},
    ]},
    "BatchRequest": {
        "jobs": [{"kind": "email.welcome", "args": {"email": "ada@example.com", "name": "Ada Lovelace"}},
                 {"kind": "email.welcome", "args": {"email": "grace@example.com", "name": "Grace Hopper"}}],
        "then": {"kind": "maintenance.daily_report", "args": {}},
    },
}
