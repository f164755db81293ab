"""`make run`: migrate, then start the four services and a local SMTP sink; Ctrl-C stops them all."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from shared.rabbitmq_management import management_ui_url
from shared.service_catalog import HEARTBEATS, MIGRATE_MODULE, SERVICES

ROOT = Path(__file__).resolve().parent.parent
MAIL_DIR = Path(os.environ.get("MAIL_DIR", ROOT / "var" / "mail"))



def port_problem(variable: str, host: str, port: int) -> str | None:
    """One line naming the setting to change when `host:port` cannot be listened on, or None."""
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        # No SO_REUSEADDR: a port another program listens on must be reported, not shared.
        probe.bind((host, port))
    except OSError as error:
        reason = "is already in use" if error.errno in (98, 48) else f"cannot be used ({error.strerror})"
        return (f"make run: port {port} on {host} ({variable}) {reason}; "
                f"choose another, e.g. `{variable}={port + 1} make run`")
    finally:
        probe.close()
    return None


def metrics_ports(env: dict[str, str]) -> dict[str, int]:
    """METRICS_PORT=N serves the scheduler's /metrics on N and the workers' on N+1, N+2 (unset: none)."""
    base = env.get("METRICS_PORT", "")
    if not base.isdigit():
        return {}
    return {name: int(base) + index for index, name in enumerate(HEARTBEATS)}


def check_ports(env: dict[str, str]) -> list[str]:
    wanted = [("API_PORT", env.get("API_HOST", "127.0.0.1"), env.get("API_PORT", "5000")),
              ("SMTP_PORT", "127.0.0.1", env["SMTP_PORT"])]
    metrics_host = env.get("METRICS_HOST", "127.0.0.1")
    wanted += [("METRICS_PORT", metrics_host, str(port)) for port in metrics_ports(env).values()]
    problems = []
    for variable, host, port in wanted:
        if not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"make run: {variable}={port!r} is not a port number (1-65535)")
            continue
        problem = port_problem(variable, host, int(port))
        if problem is not None:
            problems.append(problem)
    return problems


def _get(url: str, token: str | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=2) as response:
        return response.status, response.read()


def wait_until_ready(base: str, processes: dict[str, subprocess.Popen[bytes]], token: str | None,
                     timeout: float = 90.0) -> str | None:
    """None once the api answers /readyz and every other service heartbeats; otherwise what is missing."""
    deadline = time.monotonic() + timeout
    missing = "the api is not ready (/readyz)"
    while time.monotonic() < deadline:
        for name, process in processes.items():
            if process.poll() is not None:
                return f"{name} exited with status {process.returncode}; see its messages above"
        try:
            status, _ = _get(f"{base}/readyz", token)
            if status == 200:
                _, body = _get(f"{base}/api/servers", token)
                live = {(row["service"], row["pid"]) for row in json.loads(body) if not row["dead"]}
                waiting = [name for name, service in HEARTBEATS.items()
                           if (service, processes[name].pid) not in live]
                if not waiting:
                    return None
                missing = "no heartbeat yet from " + ", ".join(waiting)
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    return f"{missing} after {timeout:.0f} s"


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    env = dict(os.environ)
    env.setdefault("SMTP_PORT", "1025")
    # The daily report goes to someone, and lands in the sink's mail folder beside the other emails.
    env.setdefault("ADMIN_EMAILS", "admin@localhost")
    python = sys.executable
    problems = check_ports(env)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(2)
    subprocess.run([python, "-m", MIGRATE_MODULE], check=True, env=env, cwd=ROOT)
    MAIL_DIR.mkdir(parents=True, exist_ok=True)
    services = {"smtp-sink": subprocess.Popen(
        [python, "-m", "scripts.smtp_sink", "--port", env["SMTP_PORT"], "--dir", str(MAIL_DIR)], env=env, cwd=ROOT)}
    ports = metrics_ports(env)
    services.update({service.name: subprocess.Popen([python, "-m", service.module], cwd=ROOT, env={
        **{key: value for key, value in env.items() if key != "METRICS_PORT"},
        **({"METRICS_PORT": str(ports[service.name])} if service.name in ports else {})}) for service in SERVICES})
    processes = list(services.values())
    host, port = env.get("API_HOST", "127.0.0.1"), env.get("API_PORT", "5000")
    rabbitmq_ui = management_ui_url(env.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/"))
    try:
        problem = wait_until_ready(f"http://{host}:{port}", services, env.get("API_TOKEN") or None)
    except KeyboardInterrupt:
        problem = "interrupted"
    if problem is not None:
        # The banner promises a running system, so it is never printed for a half-started one.
        print(f"make run: eventjobs did not start: {problem}; stopping", file=sys.stderr)
        stop_all(processes)
        sys.exit(1)
    metrics_host = env.get("METRICS_HOST", "127.0.0.1")
    metrics_note = "".join(f"\n                 http://{metrics_host}:{number}/metrics   ({name})"
                           for name, number in ports.items())
    print(
        f"""
eventjobs is running.
  API            http://{host}:{port}/api/          (health: /healthz, ready: /readyz)
  API docs       http://{host}:{port}/api/docs
  Dashboard      http://{host}:{port}/jobs      (daily reports: /jobs/reports, mailed to {env['ADMIN_EMAILS']})
  Metrics        http://{host}:{port}/metrics{metrics_note}
  RabbitMQ UI    {rabbitmq_ui}            (guest / guest)
  Sent mail      {MAIL_DIR}/   (SMTP sink on 127.0.0.1:{env['SMTP_PORT']})

Enqueue a job:
  curl -X POST http://{host}:{port}/api/users -H 'Content-Type: application/json' \\
       -d '{{"email": "ada@example.com", "name": "Ada"}}'
  curl -X POST http://{host}:{port}/api/jobs -H 'Content-Type: application/json' \\
       -d '{{"kind": "email.welcome", "args": {{"email": "ada@example.com", "name": "Ada"}}}}'
Watch it:  curl http://{host}:{port}/api/jobs/<id>   or open the dashboard.
Ctrl-C stops everything.
""",
        flush=True,
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        for process in processes:
            if process.poll() is not None:
                print(f"process {process.args} exited with {process.returncode}; stopping", file=sys.stderr)
                stopping = True
        time.sleep(0.5)
    stop_all(processes)


if __name__ == "__main__":
    main()
