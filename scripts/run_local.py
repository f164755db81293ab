"""`make run`: migrate, then start the four services and a local SMTP sink; Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
MAIL_DIR = Path(os.environ.get("MAIL_DIR", ROOT / "var" / "mail"))

SERVICES = [
    ("api", ["-m", "services.api"]),
    ("scheduler", ["-m", "services.scheduler"]),
    ("email-worker", ["-m", "services.email_worker"]),
    ("maintenance-worker", ["-m", "services.maintenance_worker"]),
]


def wait_until_ready(url: str, processes: list[subprocess.Popen[bytes]], timeout: float = 60.0) -> bool:
    """Print the URLs once the api answers /readyz (Postgres and RabbitMQ reachable), not on a guess."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def main() -> None:
    env = dict(os.environ)
    env.setdefault("SMTP_PORT", "1025")
    python = sys.executable
    subprocess.run([python, "-m", "shared.db.migrate"], check=True, env=env, cwd=ROOT)
    MAIL_DIR.mkdir(parents=True, exist_ok=True)
    processes = [
        subprocess.Popen([python, "-m", "scripts.smtp_sink", "--port", env["SMTP_PORT"], "--dir", str(MAIL_DIR)],
                         env=env, cwd=ROOT)
    ]
    processes += [subprocess.Popen([python, *args], env=env, cwd=ROOT) for _, args in SERVICES]
    host, port = env.get("API_HOST", "127.0.0.1"), env.get("API_PORT", "5000")
    management = urlsplit(env.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/"))
    rabbitmq_ui = f"{management.scheme}://{management.hostname}:{management.port or 15672}/"
    if not wait_until_ready(f"http://{host}:{port}/readyz", processes):
        print("the api did not become ready; see the logs above", file=sys.stderr)
    print(
        f"""
eventjobs is running.
  API            http://{host}:{port}/api/          (health: /healthz, ready: /readyz)
  API docs       http://{host}:{port}/api/docs
  Dashboard      http://{host}:{port}/jobs
  Metrics        http://{host}:{port}/metrics
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
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    main()
