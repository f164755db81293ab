"""Make sure PostgreSQL and RabbitMQ answer before `make run` / `make test`.

Where they don't: start the local ones, or install them with apt (root on Debian), or stop with a
message naming what is missing and the compose command that provides it. Standard library only:
this runs before anything else is known to work.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit

COMPOSE_HINT = "docker compose -f docker/docker-compose.yml up -d postgres rabbitmq mailpit"


def say(message: str) -> None:
    print(f"[services] {message}", flush=True)


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if answers(host, port):
            return True
        time.sleep(0.5)
    return False


def is_local(host: str) -> bool:
    return host in {"127.0.0.1", "localhost", "::1", ""}


def can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def run(*command: str) -> bool:
    say("$ " + " ".join(command))
    return subprocess.run(command, check=False).returncode == 0


def apt_install(*packages: str) -> bool:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", *packages], env=env, check=False).returncode == 0:
        return True
    subprocess.run(["apt-get", "update"], env=env, check=False)
    return subprocess.run(["apt-get", "install", "-y", *packages], env=env, check=False).returncode == 0


def missing(what: str, url: str) -> None:
    sys.exit(
        f"[services] {what} does not answer at {url} and could not be started here.\n"
        f"[services] Start it yourself, or on a machine with Docker: {COMPOSE_HINT}"
    )


def start_postgres() -> None:
    if shutil.which("pg_ctlcluster") and shutil.which("pg_lsclusters"):
        clusters = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=False).stdout
        for line in clusters.splitlines():
            version, name = line.split()[:2]
            run("pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start")


def ensure_postgres(url: str) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if answers(host, port):
        say(f"PostgreSQL answers at {host}:{port}")
        return
    if not is_local(host):
        missing("PostgreSQL", url)
    start_postgres()
    if not wait_for(host, port, 20) and can_apt():
        say("installing PostgreSQL with apt")
        apt_install("postgresql")
        start_postgres()
        # Debian's default is peer auth on the socket and md5 on TCP; local development needs trust.
        for hba in subprocess.run(["sh", "-c", "ls /etc/postgresql/*/main/pg_hba.conf"], capture_output=True,
                                  text=True, check=False).stdout.split():
            with open(hba, "w") as handle:
                handle.write("local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n")
        start_postgres()
        run("sh", "-c", "pg_lsclusters -h | awk '{print $1\" \"$2}' | "
                        "xargs -r -n2 pg_ctlcluster --skip-systemctl-redirect reload 2>/dev/null || true")
    if not wait_for(host, port, 30):
        missing("PostgreSQL", url)
    say(f"PostgreSQL answers at {host}:{port}")


def ensure_rabbitmq(url: str, management: bool) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    if not answers(host, port):
        if not is_local(host):
            missing("RabbitMQ", url)
        if not shutil.which("rabbitmq-server") and can_apt():
            say("installing RabbitMQ with apt")
            apt_install("rabbitmq-server")
        if shutil.which("rabbitmq-server"):
            run("rabbitmq-server", "-detached")
        if not wait_for(host, port, 60):
            missing("RabbitMQ", url)
    say(f"RabbitMQ answers at {host}:{port}")
    if management and is_local(host) and not answers(host, 15672):
        if shutil.which("rabbitmq-plugins"):
            run("rabbitmq-plugins", "enable", "rabbitmq_management")
        if not wait_for(host, 15672, 60):
            missing("The RabbitMQ management plugin (port 15672)", f"http://{host}:15672/")
    if management:
        wait_for_management(f"http://{host}:15672/api/overview")


def wait_for_management(url: str) -> None:
    password_manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    password_manager.add_password(None, url, "guest", "guest")
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(password_manager))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with opener.open(url, timeout=2) as response:
                if response.status == 200:
                    say("RabbitMQ management API answers")
                    return
        except OSError:
            pass
        time.sleep(0.5)
    missing("The RabbitMQ management API", url)


def ensure_chromium() -> None:
    if os.path.exists("/usr/bin/chromium"):
        return
    if can_apt():
        say("installing Debian's chromium for the browser tests")
        apt_install("chromium")
    if not os.path.exists("/usr/bin/chromium"):
        sys.exit("[services] the browser tests need Debian's chromium at /usr/bin/chromium: apt-get install chromium")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--browser", action="store_true", help="also make sure /usr/bin/chromium exists")
    options = parser.parse_args()
    ensure_postgres(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/eventjobs"))
    ensure_rabbitmq(os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"), management=True)
    if options.browser:
        ensure_chromium()


if __name__ == "__main__":
    main()
