# presence-sip: one job per target (STYLE.md section 8).  `make help` lists them.
#
#   make test               install everything needed, lint, run every test group
#   make test PY=3.12       the same with another Python, in its own venv (.venv-3.12)
#
# PY picks the interpreter: `python3` (default, venv `.venv`), or a version such as `3.12`,
# resolved to `python3.12` on PATH and, when that cannot run (an unselected pyenv shim), to
# $(HOME)/.pyenv/versions/3.12*/bin/python3.12.  Each Python gets its own venv: .venv-<version>.
# Stamp files inside the venv make a second `make test` skip the installation.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PY ?= python3
ifeq ($(PY),python3)
VENV ?= .venv
else
VENV ?= .venv-$(patsubst python%,%,$(notdir $(PY)))
endif

# The interpreter that creates the venv (resolved once per make run).
PYTHON_BIN := $(shell \
	py='$(PY)'; case "$$py" in ([0-9]*) py="python$$py" ;; esac; \
	if exe=$$("$$py" -c 'import sys; print(sys.executable)' 2>/dev/null); then echo "$$exe"; \
	else last=""; for c in $(HOME)/.pyenv/versions/$(patsubst python%,%,$(PY))*/bin/$$(basename "$$py"); do \
	  [ -x "$$c" ] && last="$$c"; done; echo "$${last:-$$py}"; fi)

PYTHON := $(VENV)/bin/python
PYTEST := $(PYTHON) -bb -m pytest
PYTEST_ARGS ?=
# Test groups allowed to select no test at all (pytest exit code 5) until their issue lands.
ALLOW_EMPTY ?= fuzz
LINT_PATHS := $(wildcard presence_sip tests benchmarks fuzz docs)
FUZZ_TIME ?= 60

STAMP_DEV := $(VENV)/.stamp-dev
STAMP_BENCH := $(VENV)/.stamp-bench
STAMP_COV := $(VENV)/.stamp-cov

# command:debian-package pairs installed by `install` when the command is missing.
SYSTEM_TOOLS := sipp:sip-tester baresip:baresip-core socat:socat
BENCH_PACKAGES := kamailio kamailio-presence-modules
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_GET := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

# $(call apt_install,PACKAGES): one `apt-get update`, then install, when PACKAGES is not empty.
define apt_install
if [ -n "$(strip $(1))" ]; then \
  echo "installing Debian packages:$(1)"; \
  $(APT_GET) update -qq; \
  $(APT_GET) install -y -qq --no-install-recommends $(1); \
fi
endef

# $(call pytest_group,NAME,MARKER-EXPRESSION[,ENV-ASSIGNMENTS,MORE-ARGS]): run one group; "no tests" (exit 5)
# fails the group unless NAME is in ALLOW_EMPTY.
define pytest_group
rc=0; $(3) $(PYTEST) tests -m "$(2)" $(4) $(PYTEST_ARGS) || rc=$$?; \
if [ $$rc -eq 5 ] && [ -n "$(filter $(1),$(ALLOW_EMPTY))" ]; then \
  echo "$(1): no tests yet (allowed by ALLOW_EMPTY)"; rc=0; \
elif [ $$rc -eq 5 ]; then echo "$(1): no tests were collected" >&2; fi; \
exit $$rc
endef

.PHONY: help install venv build-tools system-tools fmt lint type test test-unit test-int test-sipp \
	test-interop fuzz cov cov-pure bench bench-tools demo certs clean distclean

help:
	@echo "targets: venv install fmt lint type test test-unit test-int test-sipp test-interop"
	@echo "         fuzz cov bench demo certs clean distclean      (PY=3.12 for another Python)"

install: venv system-tools

venv: $(STAMP_DEV)

# The modules setup.py compiles with mypyc: an edit to one needs a rebuild (the compiled module
# shadows its .py; tests/conftest.py refuses a stale build).
NATIVE_SOURCES := $(shell sed -n 's/^    "\(presence_sip\/.*\.py\)",$$/\1/p' setup.py)

$(STAMP_DEV): pyproject.toml setup.py presence_sip/sip/_speedups.c presence_sip/presence/_speedups.c \
		$(NATIVE_SOURCES) | build-tools
	@[ -x "$(PYTHON)" ] || { echo "creating $(VENV) with $(PYTHON_BIN)"; "$(PYTHON_BIN)" -m venv "$(VENV)"; }
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

# The parser's C fast path (setup.py) needs a C compiler and the interpreter's headers; without
# them pip would quietly install the pure-Python parser and tests/unit/test_speedups.py would fail.
build-tools:
	@missing=""; command -v cc >/dev/null || missing=" gcc libc6-dev"; \
	if ! "$(PYTHON_BIN)" -c 'import os, sys, sysconfig; \
	    sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then \
	  missing="$$missing $$("$(PYTHON_BIN)" -c 'import sys; print("python%d.%d-dev" % sys.version_info[:2])')"; \
	fi; $(call apt_install,$$missing)

system-tools:
	@missing=""; for pair in $(SYSTEM_TOOLS); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; \
	done; $(call apt_install,$$missing)

fmt: venv
	$(VENV)/bin/ruff check --select I --fix $(LINT_PATHS)
	$(VENV)/bin/ruff format $(LINT_PATHS)

# mypy holds one module per name and pytest imports each conftest.py as `conftest`: the two
# below are excluded from the main run (pyproject.toml) and checked one at a time.
MYPY_ALONE := tests/integration/conftest.py tests/sipp/conftest.py

lint: venv type
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

type: venv
	$(VENV)/bin/mypy
	for f in $(MYPY_ALONE); do $(VENV)/bin/mypy "$$f" || exit 1; done

test: install lint test-unit test-int test-sipp test-interop

# Groups partition the suite: tests/conftest.py marks tests by directory.
test-unit: venv
	@$(call pytest_group,unit,not integration and not sipp and not interop)

test-int: venv
	@$(call pytest_group,integration,integration and not sipp and not interop)

test-sipp: install
	@$(call pytest_group,sipp,sipp and not interop)

test-interop: install
	@$(call pytest_group,interop,interop)

# Hypothesis tests named *fuzz* with many more examples, then each atheris harness in fuzz/
# (fuzz/_*.py are their shared code) for FUZZ_TIME seconds; a finding is written to build/fuzz/
# and fails the target.
fuzz: venv
	@$(call pytest_group,fuzz,not sipp and not interop,HYPOTHESIS_PROFILE=fuzz,-k fuzz)
	@harnesses="$(filter-out fuzz/_%,$(wildcard fuzz/*.py))"; if [ -n "$$harnesses" ]; then \
	  $(PYTHON) -c 'import atheris' 2>/dev/null || $(PYTHON) -m pip install --quiet atheris; \
	  mkdir -p build/fuzz; \
	  for h in $$harnesses; do echo "fuzzing $$h for $(FUZZ_TIME)s"; \
	    $(PYTHON) "$$h" -max_total_time=$(FUZZ_TIME) -artifact_prefix=build/fuzz/ || exit 1; \
	  done; \
	fi

$(STAMP_COV): $(STAMP_DEV)
	$(PYTHON) -c 'import coverage' 2>/dev/null || $(PYTHON) -m pip install --quiet 'coverage[toml]>=7'
	@touch $@

# Coverage traces Python code, and compiled modules run none: measured on a pure-Python build
# (no mypyc, no C parser path).  The compiled modules of this tree would shadow the .py files of
# any venv, so the build is a copy of the tracked files in $(COV_TREE), with its own venv there.
COV_TREE := build/cov-tree
cov:
	mkdir -p $(COV_TREE)
	git ls-files -z | xargs -0 cp -p --parents -t $(COV_TREE)
	$(MAKE) -C $(COV_TREE) PRESENCE_SIP_PURE=1 PY=$(PY) cov-pure

cov-pure: install $(STAMP_COV)
	$(PYTHON) -bb -m coverage run -m pytest tests $(PYTEST_ARGS)
	$(PYTHON) -m coverage report --show-missing

# The packages of the bench extra alone: `pip install -e '.[bench]'` would build the project (and
# its mypyc modules, ~50 s) a second time.
BENCH_EXTRA := import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"], sep="\n")

$(STAMP_BENCH): $(STAMP_DEV)
	$(PYTHON) -c '$(BENCH_EXTRA)' > $(VENV)/bench-requirements.txt
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r $(VENV)/bench-requirements.txt
	@touch $@

bench-tools: system-tools
	@missing=""; for pkg in $(BENCH_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null | grep -q 'ok installed' \
	    || missing="$$missing $$pkg"; \
	done; $(call apt_install,$$missing)

bench: $(STAMP_BENCH) bench-tools
	$(PYTHON) benchmarks/run.py
	$(PYTHON) benchmarks/bench_transactions.py
	$(PYTHON) benchmarks/bench_parser.py

demo: install
	$(VENV)/bin/presence-sip demo

certs: venv
	$(VENV)/bin/presence-sip certs demo --out certs

# Also the compiled extensions (and the stamps that say they are built).
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov build dist *.egg-info
	find presence_sip -name '*.so' -delete
	rm -f .venv*/.stamp-dev
	find . -path './.venv*' -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also the venvs and generated certificates.
distclean: clean
	rm -rf .venv .venv-*
	find certs -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
