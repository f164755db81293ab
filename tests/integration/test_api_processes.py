"""API_PROCESSES=2: `python -m services.api` is a supervisor of two api processes sharing one port.

Both serve (which process accepted each connection is read from /proc, no header of ours says it), a dashboard
session made on one is good on the other, /metrics adds up both, and SIGTERM stops all of them with exit 0.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from services.api.security.sessions import SESSION_COOKIE
from tests.support.environment import TestEnvironment
from tests.support.live_api import browser_session, csrf_from
from tests.support.processes import service_process
from tests.support.smtp import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

TOKEN = "operator-token-0123456789"
CONNECTIONS = 32  # fresh connections: all 32 landing on one of two processes has odds of 2**-31
SHUTDOWN_TIMEOUT = 5.0  # the test environment's SHUTDOWN_TIMEOUT_SECONDS


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def accepted_by(children: list[int], port: int, client_ports: list[int]) -> Counter[int]:
    """Which child holds the server side of each of our connections: /proc/net/tcp gives the socket's inode
    (local port `port`, remote port the client's), /proc/<child>/fd which process has it open."""
    inodes: dict[str, int] = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        remote_port = int(fields[2].split(":")[1], 16)
        if local_port == port and remote_port in client_ports:
            inodes[f"socket:[{fields[9]}]"] = remote_port
    owners: Counter[int] = Counter()
    for child in children:
        held = len(open_files(child) & inodes.keys())
        if held:
            owners[child] = held
    return owners


def open_files(pid: int) -> set[str]:
    """What `pid`'s descriptors point at (`socket:[inode]` for a socket)."""
    targets = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return targets


async def open_with_session(port: int, session: str) -> tuple[int, int, asyncio.StreamWriter]:
    """A fresh connection, GET /jobs with the session cookie on it, left open: (status, our port, the writer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {SESSION_COOKIE}={session}\r\n\r\n"
                 .encode())
    status_line = await reader.readline()
    return int(status_line.split()[1]), int(writer.get_extra_info("sockname")[1]), writer


async def ready(base: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def serving(supervisor: asyncio.subprocess.Process, port: int) -> list[int]:
    """The supervisor's api processes, once it has some and /readyz answers."""
    async def started() -> list[int]:
        return children_of(supervisor.pid)

    children = await eventually(started, timeout=30, what="the api processes")
    await eventually(lambda: ready(f"http://127.0.0.1:{port}"), timeout=60, interval=0.2, what="/readyz")
    return children


async def test_two_processes_share_the_port_and_stop_together(env: TestEnvironment, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with service_process("services.api", env, tmp_path / "api.log", api_processes=2, api_port=port,
                               api_host="127.0.0.1", api_token=TOKEN) as supervisor:
        async def both_listening() -> bool:
            return len(listening(children, port)) == 2

        children = await serving(supervisor, port)
        assert len(children) == 2
        # each child binds the port once its pool and broker are open: wait for both before spreading connections
        await eventually(both_listening, timeout=60, interval=0.2, what="both api processes listening")

        async with browser_session(Origin=base) as browser:
            login = await (await browser.get(f"{base}/jobs/login")).text()
            async with browser.post(f"{base}/jobs/login", allow_redirects=False,
                                    data={"token": TOKEN, "csrf_token": csrf_from(login), "next": "/jobs"}) as answer:
                assert answer.status == 303
                session = re.search(rf"{SESSION_COOKIE}=([^;]+)", answer.headers["Set-Cookie"]).group(1)  # type: ignore[union-attr]

        connections = [await open_with_session(port, session) for _ in range(CONNECTIONS)]
        try:
            # a session signed by one process is good on the other: they share the supervisor's secret
            assert [status for status, _, _ in connections] == [200] * CONNECTIONS
            owners = accepted_by(children, port, [client_port for _, client_port, _ in connections])
            assert sum(owners.values()) == CONNECTIONS and set(owners) == set(children), owners
        finally:
            for _, _, writer in connections:
                writer.close()

        async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
            metrics = await response.text()
        served = re.search(r'http_requests_total\{method="GET",route="/jobs",status="200"\} (\S+)', metrics)
        assert served is not None and float(served.group(1)) == CONNECTIONS  # both processes' counts, added

        supervisor.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(supervisor.wait(), SHUTDOWN_TIMEOUT + 10)
        assert code == 0
        for child in children:
            with pytest.raises(ProcessLookupError):
                os.kill(child, 0)


def listening(children: list[int], port: int) -> set[int]:
    """The children holding a listening socket on `port` (state 0A in /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inodes.add(f"socket:[{fields[9]}]")
    return {child for child in children if open_files(child) & inodes}


async def test_a_killed_supervisor_takes_its_api_processes_with_it(env: TestEnvironment, tmp_path: Path) -> None:
    port = free_port()
    async with service_process("services.api", env, tmp_path / "api.log", api_processes=2, api_port=port,
                               api_host="127.0.0.1") as supervisor:
        children = await serving(supervisor, port)

        supervisor.kill()  # no chance to pass anything on: the children follow it by themselves
        await supervisor.wait()

        async def all_gone() -> bool:
            return not running(children)

        await eventually(all_gone, timeout=SHUTDOWN_TIMEOUT + 10, what="the api processes to exit")


def running(pids: list[int]) -> list[int]:
    """Those of `pids` alive (a zombie awaiting its reaper is not)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


async def test_an_api_process_that_fails_stops_the_rest_and_its_exit_code_is_the_supervisors(
    env: TestEnvironment, tmp_path: Path
) -> None:
    with socket.socket() as taken:  # bound without SO_REUSEPORT: no child can bind the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with service_process("services.api", env, tmp_path / "api.log", api_processes=2, api_port=port,
                                   api_host="127.0.0.1") as supervisor:
            code = await asyncio.wait_for(supervisor.wait(), 60)
            children = children_of(supervisor.pid)
    assert code == 1, (tmp_path / "api.log").read_text()  # the children's: an uncaught OSError from the bind
    assert not children


async def test_a_child_killed_alone_stops_its_sibling_and_the_supervisor_exits_non_zero(
    env: TestEnvironment, tmp_path: Path
) -> None:
    port = free_port()
    async with service_process("services.api", env, tmp_path / "api.log", api_processes=2, api_port=port,
                               api_host="127.0.0.1") as supervisor:
        children = await serving(supervisor, port)

        os.kill(children[0], signal.SIGKILL)
        code = await asyncio.wait_for(supervisor.wait(), SHUTDOWN_TIMEOUT + 10)
    assert code == 1  # killed by a signal: not a clean exit, whatever the sibling's drain said
    assert not running(children)
    assert "an api process exited; stopping the others" in (tmp_path / "api.log").read_text()
