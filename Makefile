# The two commands of the README: `make demo` and `make test`. Everything runs from .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAGE ?= prod
PACKAGE_DIR := build/package

.PHONY: demo test lint pytest browser fuzz package validate clean bench

$(BIN)/activate: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: $(BIN)/activate
	$(BIN)/python -m demo

# Benchmarks (bench/README.md): every section against its peer, one table each, all written to
# bench/results/latest.md. The peers (Cloud Custodian, libvips) live in their own venv, made here from
# bench/requirements.txt and never part of the Lambda; if it cannot be made, their rows say "not run".
PEERS := bench/.venv-peers

$(PEERS)/.installed: bench/requirements.txt
	rm -rf $(PEERS)
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet --upgrade pip
	$(PEERS)/bin/pip install --quiet -r bench/requirements.txt
	touch $@

bench: $(BIN)/activate
	-$(MAKE) $(PEERS)/.installed
	$(BIN)/python -m bench.suite

# tests/test_packaging.py runs `make package` (chalice package + cfn-lint) once, inside pytest.
test: lint pytest

lint: $(BIN)/activate
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app.py chalicelib

pytest: $(BIN)/activate browser
	$(BIN)/pytest -q

# The status page is tested in Debian's Chromium (tests/functional/test_websites_status_page.py): installed
# here where it is missing, from the package lists on the machine or, failing that, fresh ones.
browser:
	@command -v chromium >/dev/null || { \
		sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		export DEBIAN_FRONTEND=noninteractive; \
		$$sudo apt-get install -y --no-install-recommends chromium \
		|| { $$sudo apt-get update && $$sudo apt-get install -y --no-install-recommends chromium; }; }

# Fuzzing (tests/fuzz/): the targets `make test` runs at Hypothesis' 100 examples each, here under the
# `fuzz` profile (tests/conftest.py) at 2,000 each, 14,000 in all. The last lines name each failing target
# and count: "fuzz: N examples across M targets, K failures".
fuzz: $(BIN)/activate
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -m fuzz tests/fuzz

validate: $(BIN)/activate
	$(BIN)/opsbots validate policies

# The deployable artefact: a CloudFormation (SAM) template, sam.json, plus deployment.zip and thumbnails.zip,
# checked by cfn-lint. Chalice writes one zip for every function; deploy/package_zips.py leaves out what the
# Lambda runtime provides and what no function runs, compiles what they import for the runtime's Python, and
# keeps the imaging libraries for the thumbnail bot's zip alone; the functions get what the registry says they
# run with, and the roles' table, queue and SES ARNs are pinned to the stack's own account and region
# (deploy/finish_template.py).
package: $(BIN)/activate
	rm -rf $(PACKAGE_DIR)
	# chalice wants a region to start, but the template it writes names none.
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} \
		$(BIN)/chalice package --stage $(STAGE) --pkg-format cloudformation \
		--merge-template deploy/resources.json $(PACKAGE_DIR)
	$(BIN)/python -m deploy.package_zips $(PACKAGE_DIR)
	$(BIN)/python -m deploy.finish_template $(PACKAGE_DIR)/sam.json
	$(BIN)/cfn-lint $(PACKAGE_DIR)/sam.json

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
