# The two commands of the README: `make demo` and `make test`. Everything runs from .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAGE ?= prod
PACKAGE_DIR := build/package

.PHONY: demo test lint pytest fuzz package validate clean bench

$(BIN)/activate: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

demo: $(BIN)/activate
	$(BIN)/python -m demo

# Benchmarks (bench/README.md), each writing its table to bench/results/<name>.md: the snapshot bot
# against moto's HTTP server, then the thumbnail render path against naive Pillow and libvips. pyvips is
# for the bench only; if it cannot be installed, the thumbnail table just has no libvips rows.
bench: $(BIN)/activate
	-$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python -m bench.snapshots
	$(BIN)/python -m bench.thumbnails

# tests/test_packaging.py runs `make package` (chalice package + cfn-lint) once, inside pytest.
test: lint pytest

lint: $(BIN)/activate
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app.py chalicelib

pytest: $(BIN)/activate
	$(BIN)/pytest -q

# Fuzzing (tests/fuzz/): the targets `make test` runs at Hypothesis' 100 examples each, here under the
# `fuzz` profile (tests/conftest.py) at 2,000 each, 14,000 in all. The last lines name each failing target
# and count: "fuzz: N examples across M targets, K failures".
fuzz: $(BIN)/activate
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -m fuzz tests/fuzz

validate: $(BIN)/activate
	$(BIN)/opsbots validate policies

# The deployable artefact: a CloudFormation (SAM) template, sam.json, plus deployment.zip, checked
# by cfn-lint. boto3/botocore come with the Lambda runtime, but aws-xray-sdk (the Tracer extra)
# depends on botocore and chalice has no exclude option, so they are dropped from the zip here.
package: $(BIN)/activate
	rm -rf $(PACKAGE_DIR)
	# chalice wants a region to start, but the template it writes names none.
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} \
		$(BIN)/chalice package --stage $(STAGE) --pkg-format cloudformation \
		--merge-template deploy/resources.json $(PACKAGE_DIR)
	$(BIN)/python deploy/drop_runtime_libs.py $(PACKAGE_DIR)/deployment.zip
	$(BIN)/cfn-lint $(PACKAGE_DIR)/sam.json

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache
