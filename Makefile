# Developer and demo entry points (GNU make). Run from the repository root.
#
#   make demo        run workflows/variant-calling through the Muse executor
#   make test        the test suite
#   make lint        ruff check, ruff format --check, mypy
#   make clean-demo  remove what the demo produced

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKFLOW := workflows/variant-calling
PROFILE ?= profiles/local
DATA_DIR ?= /usr/share/doc/samtools/examples
DEBIAN_PACKAGES := samtools bwa bcftools
PYTEST_ARGS ?=

# The install stamp carries a hash of pyproject.toml: a changed dependency list
# reinstalls, anything else (including a fresh mtime after a checkout) does not.
PYPROJECT_HASH := $(shell sha256sum pyproject.toml | cut -c1-16)
STAMP := $(VENV)/.installed-$(PYPROJECT_HASH)

# Recipes and the jobs they start find the virtualenv's python (with matplotlib)
# and tools first.
export PATH := $(abspath $(BIN)):$(PATH)

.DEFAULT_GOAL := help
.PHONY: help venv debian-packages demo-data demo test lint clean-demo

help:
	@echo "make demo        run $(WORKFLOW) with --profile $(PROFILE)"
	@echo "make test        run the test suite (.venv/bin/python -m pytest)"
	@echo "make lint        ruff check, ruff format --check, mypy"
	@echo "make clean-demo  remove the demo's results"
	@echo "Variables: PROFILE=$(PROFILE) DATA_DIR=$(DATA_DIR) PYTEST_ARGS=..."

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): | $(BIN)/python
	rm -f $(VENV)/.installed-*
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

venv: $(STAMP)

# Installs the missing tools when run as root on Debian/Ubuntu; otherwise names
# them and stops.
debian-packages:
	@missing=""; \
	for tool in $(DEBIAN_PACKAGES); do \
	    command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "Missing tools:$$missing. Install the Debian packages" \
	        "(sudo apt-get install$$missing) or run make as root." >&2; \
	    exit 1; \
	fi; \
	echo "Installing Debian packages:$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing

demo-data: debian-packages
	@for file in ex1.fa ex1.sam.gz; do \
	    if [ ! -r "$(DATA_DIR)/$$file" ]; then \
	        echo "Demo data not found: $(DATA_DIR)/$$file. It comes with the" \
	            "samtools package under /usr/share/doc/samtools/examples;" \
	            "if that folder is excluded on this system, copy ex1.fa and" \
	            "ex1.sam.gz elsewhere and run make demo DATA_DIR=that-folder." >&2; \
	        exit 1; \
	    fi; \
	done

demo: venv demo-data
	$(BIN)/snakemake --profile $(PROFILE) -d $(WORKFLOW) -s $(WORKFLOW)/Snakefile \
	    --config data_dir=$(DATA_DIR)
	@echo
	@echo "Variant calls: $(WORKFLOW)/results/calls.vcf" \
	    "($$(grep -vc '^#' $(WORKFLOW)/results/calls.vcf) variant records)"
	@for png in $(WORKFLOW)/results/plots/*.png; do echo "Depth plot:    $$png"; done
	@echo "Job logs:      $(WORKFLOW)/results/logs/ (failed Muse jobs:" \
	    "$(WORKFLOW)/.snakemake/muse/logs/)"

# pytest exits 5 when it collected no test: make fails on it like on any other
# non-zero code, and says why.
test: venv
	@$(BIN)/python -m pytest $(PYTEST_ARGS); code=$$?; \
	if [ $$code -eq 5 ]; then \
	    echo "make test: pytest collected no tests (exit 5); that is a failure." >&2; \
	fi; \
	exit $$code

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean-demo:
	rm -rf $(WORKFLOW)/results $(WORKFLOW)/resources $(WORKFLOW)/.snakemake
