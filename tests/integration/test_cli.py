"""The `eventjobs` command, run as a process against this test's database and vhost: each command, its
refusals (one line, exit 2) and --help everywhere."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared.messaging.topology import DEAD_QUEUE
from shared.runtime import Runtime
from tests.support.broker_probe import ready_count
from tests.support.environment import TestEnvironment

ROOT = Path(__file__).resolve().parents[2]


async def cli(env: TestEnvironment, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, cwd=ROOT, env=env.process_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def ok(env: TestEnvironment, *args: str) -> Any:
    code, out, err = await cli(env, *args)
    assert code == 0, err
    return json.loads(out) if out.strip().startswith(("{", "[")) else out


@pytest.mark.parametrize("command", [[], ["migrate"], ["run"], ["enqueue"], ["status"], ["requeue"], ["delete"],
                                     ["parking-lot"], ["parking-lot", "list"], ["parking-lot", "purge"]])
async def test_help_everywhere(env: TestEnvironment, command: list[str]) -> None:
    code, out, _ = await cli(env, *command, "--help")
    assert code == 0 and out.startswith("usage: eventjobs")


async def test_migrate_enqueue_and_status(env: TestEnvironment) -> None:
    assert await ok(env, "migrate") == {"applied": []}  # the test database is migrated already

    job = await ok(env, "enqueue", "email.welcome", "--args", '{"email": "ada@example.com", "name": "Ada"}',
                   "--delay", "600")
    assert job["state"] == "scheduled" and uuid.UUID(job["id"])
    code, _, err = await cli(env, "enqueue", "email.nope")
    assert code == 2 and err.count("\n") == 1 and "unknown job kind 'email.nope'; one of:" in err
    code, _, err = await cli(env, "enqueue", "email.welcome", "--args", '{"email": "nope"}')
    assert code == 2 and "args.email: must be an email address" in err and "args.name: is required" in err

    status = await ok(env, "status", "--json")
    assert status["jobs"]["scheduled"] == 1
    assert status["queues"] is None or any(queue["name"] == "jobs.email" for queue in status["queues"])
    text = await ok(env, "status")
    assert "scheduled 1" in text


async def test_requeue_and_delete_by_state_and_kind(env: TestEnvironment, runtime: Runtime) -> None:
    for kind in ("test.noop", "test.noop", "test.permanent"):
        await runtime.pool.execute(
            """INSERT INTO jobs (id, kind, queue, service, priority, state, max_attempts, attempt)
               VALUES ($1, $2, 'default', 'test', 5, 'failed', 3, 3)""", uuid.uuid4(), kind)
    code, _, err = await cli(env, "requeue", "--state", "broken")
    assert code == 2 and "--state must be one of" in err

    assert await ok(env, "delete", "--state", "failed", "--kind", "test.permanent") == {"changed": 1, "skipped": 0}
    # The platform's registry does not know test.noop, so requeueing publishes nothing a worker would run;
    # what matters here is the selection.
    states = await runtime.pool.fetch("SELECT kind, state FROM jobs ORDER BY kind, state")
    assert [(row["kind"], row["state"]) for row in states] == [
        ("test.noop", "failed"), ("test.noop", "failed"), ("test.permanent", "deleted")]


async def test_parking_lot_list_and_purge(env: TestEnvironment, runtime: Runtime) -> None:
    for n in range(3):
        await runtime.broker.publish_dead(f"poison {n}".encode(), f"undecodable {n}")

    async def listed() -> list[dict[str, Any]]:
        code, out, err = await cli(env, "parking-lot", "list")
        assert code == 0, err
        return [json.loads(line) for line in out.splitlines()]

    messages = await listed()
    assert [message["reason"] for message in messages] == ["undecodable 0", "undecodable 1", "undecodable 2"]

    code, _, err = await cli(env, "parking-lot", "purge", "--all")
    assert code == 2 and "needs --yes" in err  # no terminal to confirm on
    assert await ready_count(env.amqp_url, DEAD_QUEUE) == 3
    assert await ok(env, "parking-lot", "purge", "--id", messages[1]["id"], "--yes") == {"removed": 1}
    assert await ok(env, "parking-lot", "purge", "--older-than", "3600", "--yes") == {"removed": 0}
    assert await ok(env, "parking-lot", "purge", "--all", "--yes") == {"removed": 2}
    assert await listed() == []


def test_the_image_entry_point_hands_other_commands_to_the_cli() -> None:
    spec = importlib.util.spec_from_file_location("eventjobs_entrypoint", ROOT / "docker" / "entrypoint.py")
    assert spec is not None and spec.loader is not None
    entrypoint = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entrypoint)
    assert entrypoint.command_for(["api"]) == [sys.executable, "-m", "services.api"]
    assert entrypoint.command_for(["status", "--json"]) == [sys.executable, "-m", "services.cli", "status", "--json"]
