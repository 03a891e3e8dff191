# The two commands of the quick start: `make dev` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest-xdist processes for `make test`: one more than the CPUs (many tests wait on server
# processes, clusters and deadlines, and the spare process fills that time; measured on 2
# cores: 298 s with 2, 238 s with 3, 230 s with 4). TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 1 )))
# The Azure CLI for tests/cli/test_azure_cli.py, in its own virtualenv (it is large: about a
# minute to install). `make test` builds it only when CI or OKV_AZURE_CLI is set (true/1/yes).
AZ_VENV ?= .venv-az
AZ_CLI_VERSION ?= 2.91.0
AZ_STAMP := $(AZ_VENV)/.installed-$(AZ_CLI_VERSION)
AZ_WANTED := $(filter 1 true yes,$(CI) $(OKV_AZURE_CLI))
# PostgreSQL's server binaries for the tests' throwaway clusters (tests/support/postgres.py).
PG_FOUND = command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
HAPROXY_FOUND = command -v haproxy >/dev/null 2>&1 || test -x /usr/sbin/haproxy
# SoftHSM2, the PKCS#11 token HSM-protected keys live in on a dev server and in the tests.
SOFTHSM_FOUND = command -v softhsm2-util >/dev/null 2>&1
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: dev test test-cluster lint bench clean az-venv system-packages softhsm

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(AZ_STAMP):
	test -x $(AZ_VENV)/bin/python || $(PYTHON) -m venv $(AZ_VENV)
	$(AZ_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(AZ_VENV)/bin/python -m pip install --quiet azure-cli==$(AZ_CLI_VERSION)
	touch $(AZ_STAMP)

az-venv: $(AZ_STAMP)

# The distribution's packages the tests need, installed where missing (one apt run):
# PostgreSQL's server binaries (throwaway clusters, tests/support/postgres.py), HAProxy
# (the load balancer in front of several nodes) and SoftHSM2 (HSM-protected keys).
system-packages:
	@missing=""; \
	$(PG_FOUND) || missing="$$missing postgresql"; \
	$(HAPROXY_FOUND) || missing="$$missing haproxy"; \
	$(SOFTHSM_FOUND) || missing="$$missing softhsm2"; \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@$(PG_FOUND) || { echo "PostgreSQL's initdb is still missing" >&2; exit 1; }
	@$(HAPROXY_FOUND) || { echo "haproxy is still missing" >&2; exit 1; }
	@$(SOFTHSM_FOUND) || { echo "softhsm2 is still missing" >&2; exit 1; }

# The dev server's HSM: SoftHSM2, installed where missing. Without it (no root, no sudo,
# no network) the dev server still starts and says that HSM key types are unavailable.
softhsm:
	@$(SOFTHSM_FOUND) || { $(SUDO) apt-get update -qq && $(SUDO) env \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  softhsm2 >/dev/null; } || echo "make: SoftHSM2 could not be installed; HSM-protected \
	keys will be unavailable" >&2

dev: $(STAMP) softhsm
	$(BIN)/okv server --dev $(ARGS)

test: $(STAMP) system-packages $(if $(AZ_WANTED),$(AZ_STAMP))
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=15 $(ARGS)
	$(if $(ARGS),,$(MAKE) --no-print-directory test-cluster)

# The SDK suites again, against three nodes on one PostgreSQL behind HAProxy.
test-cluster: $(STAMP) system-packages
	OKV_TEST_CLUSTER=3 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope tests/sdk

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src

bench: $(STAMP)
	$(BIN)/python benchmarks/secret_get.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
