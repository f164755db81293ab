# The two commands a newcomer needs: `make run` and `make test`. Each builds the virtualenv itself.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
PYTHON ?= python3

.PHONY: install services run test lint bench clean deploy-check image-smoke

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV); } \
	  || { echo "python3 -m venv failed: install python3-venv (Python >= 3.11)"; exit 1; }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,deploy,bench]'
	@touch $(STAMP)

install: $(STAMP)

services: install
	$(PY) scripts/ensure_services.py

run: install
	$(PY) scripts/ensure_services.py
	$(PY) scripts/run_local.py

test: install deploy-check
	$(PY) scripts/ensure_services.py --browser
	$(PY) -m pytest

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy shared services
	$(VENV)/bin/pylint --disable=all --enable=duplicate-code --min-similarity-lines=6 --ignore-imports=yes \
	  --ignore-signatures=yes --ignore-docstrings=yes --ignore-comments=yes --score=no services shared

# docker/ and deploy/ linted and validated offline: compose, kustomize overlays, schemas, our own rules.
deploy-check: install
	$(PY) scripts/deploy_check.py

# Builds the image with podman on a local Debian base, runs migrate and the four services as containers
# against this machine's Postgres and RabbitMQ, signs a user up and waits for the welcome email.
image-smoke: install
	$(PY) scripts/ensure_services.py
	EVENTJOBS_IMAGE_SMOKE=1 $(PY) -m pytest tests/deploy/test_image_smoke.py -p no:cacheprovider

bench: install
	$(PY) scripts/ensure_services.py
	$(PY) -m tests.benchmarks

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
