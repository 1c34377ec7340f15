# The two commands of a new user: `make lab` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    := .venv
STAMP   := .cache/setup.stamp
PYTEST  := $(VENV)/bin/pytest
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.cache/bin:/usr/local/go/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

.PHONY: help setup lab lab-down test test-fast test-slow

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## Install system packages, the venv and the pinned tools (idempotent)

$(STAMP): pyproject.toml constraints.txt scripts/setup-host.sh scripts/setup-tools.sh
	bash scripts/setup-host.sh
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,lint]'
	bash scripts/setup-tools.sh
	@mkdir -p $(@D) && touch $@

lab: setup ## Run the main job on the local lab and print the URLs to open
	bash scripts/lab.sh up

lab-down: ## Remove everything the local lab made
	bash scripts/lab.sh down

test: setup ## Run every test: lint gates, fast suites, then the slow ones
	@# The slow suites' Go builds (minutes from a cold cache) run beside the fast suites;
	@# the slow tests that need them run last (tests/conftest.py).
	bash scripts/build-controlplane.sh >.cache/build-controlplane.log 2>&1 &
	$(PYTEST) -m "not slow"
	$(PYTEST) -m slow

test-fast: setup ## Run the lint gates and the fast suites only
	$(PYTEST) -m "not slow"

test-slow: setup ## Run the slow suites only (Molecule, lab end to end)
	$(PYTEST) -m slow
