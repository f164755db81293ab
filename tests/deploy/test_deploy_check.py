"""make deploy-check fails on a broken manifest: each case breaks a copy of docker/ and deploy/ one way."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "scripts" / "deploy_check.py"


def copy_tree(tmp_path: Path) -> Path:
    for folder in ("docker", "deploy"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def deploy_check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), "--root", str(root)], capture_output=True, text=True,
                          timeout=240, check=False)


def edit_yaml(path: Path, change: Callable[[list[dict]], None]) -> None:
    docs = list(yaml.safe_load_all(path.read_text()))
    change(docs)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def first_container(docs: list[dict]) -> dict:
    return docs[0]["spec"]["template"]["spec"]["containers"][0]


def drop_liveness_probe(root: Path) -> None:
    edit_yaml(root / "deploy/base/email-worker.yaml", lambda docs: first_container(docs).pop("livenessProbe"))


def unknown_container_field(root: Path) -> None:
    edit_yaml(root / "deploy/base/scheduler.yaml", lambda docs: first_container(docs).update(restartPolicyy="Always"))


def unknown_keda_field(root: Path) -> None:
    edit_yaml(root / "deploy/components/keda/scaledobjects.yaml",
              lambda docs: docs[1]["spec"].update(maxReplicas=10))


def writable_root_filesystem(root: Path) -> None:
    path = root / "deploy/base/pod-defaults.yaml"
    path.write_text(path.read_text().replace("readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"))


def service_missing_from_compose(root: Path) -> None:
    def change(docs: list[dict]) -> None:
        del docs[0]["services"]["maintenance-worker"]

    edit_yaml(root / "docker/docker-compose.yml", change)


def short_grace_period(root: Path) -> None:
    path = root / "deploy/base/configmap.yaml"
    path.write_text(path.read_text().replace('SHUTDOWN_TIMEOUT_SECONDS: "30"', 'SHUTDOWN_TIMEOUT_SECONDS: "60"'))


@pytest.mark.parametrize(("breakage", "expected"), [
    (drop_liveness_probe, "Deployment eventjobs-email-worker container email-worker: has no livenessProbe"),
    (unknown_container_field, "'restartPolicyy' was unexpected"),
    (unknown_keda_field, "ScaledObject eventjobs-email-worker: KEDA schema: unknown field spec.maxReplicas"),
    (writable_root_filesystem, "readOnlyRootFilesystem must be true"),
    (service_missing_from_compose, "docker/docker-compose.yml: never runs maintenance-worker"),
    (short_grace_period, "terminationGracePeriodSeconds 45 must exceed SHUTDOWN_TIMEOUT_SECONDS 60"),
])
def test_a_broken_tree_fails(tmp_path: Path, breakage: Callable[[Path], None], expected: str) -> None:
    root = copy_tree(tmp_path)
    breakage(root)
    result = deploy_check(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout, result.stdout


def test_the_unbroken_copy_passes(tmp_path: Path) -> None:
    """The control: the copy itself is fine, so each failure above comes from its one breakage."""
    result = deploy_check(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deploy-check: 0 problem(s)" in result.stdout
