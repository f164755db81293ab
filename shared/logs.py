"""One JSON object per log line on stderr, and the capture of a handler's lines into job_logs."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

# The job whose handler is running in the current task; set by the worker runtime.
current_job_id: contextvars.ContextVar[uuid.UUID | None] = contextvars.ContextVar("current_job_id", default=None)

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = current_job_id.get()
        if job_id is not None:
            entry["job_id"] = str(job_id)
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiormq", "aio_pika", "apscheduler", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class JobLogBuffer(logging.Handler):
    """Collects records emitted while a job runs; the worker flushes them to job_logs in batches."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.pending: list[tuple[uuid.UUID, str, str, datetime]] = []

    def emit(self, record: logging.LogRecord) -> None:
        job_id = current_job_id.get()
        if job_id is None:
            return
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self.pending.append(
            (job_id, record.levelname.lower(), message, datetime.fromtimestamp(record.created, UTC))
        )

    def take(self) -> list[tuple[uuid.UUID, str, str, datetime]]:
        taken, self.pending = self.pending, []
        return taken
