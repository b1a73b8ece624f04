# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
VENV := .venv
PORT ?= 8501
SAMPLE := sample_data/sessions.csv

.PHONY: setup run test test-fast browser bench sample clean uv-available screenshots

uv-available:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user uv

$(VENV)/.synced: pyproject.toml uv.lock
	@$(MAKE) --no-print-directory uv-available
	$(UV) sync --frozen --extra dev --compile-bytecode
	$(UV) run --frozen python -m compileall -q analytics schemas pages dashboard.py
	touch $@

setup: $(VENV)/.synced

# This computer only by default; another address (`make run ADDRESS=0.0.0.0`) needs sign-in ([auth] in secrets.toml).
run: ADDRESS ?= 127.0.0.1
run: setup
	@$(UV) run --frozen python -c 'import sys; from pages._gate import check_serving_address as check; check(sys.argv[1])' \
		'$(ADDRESS)'
	@echo "Opening KAP Outcomes on the bundled sample data, served on $(ADDRESS) port $(PORT): http://$(ADDRESS):$(PORT)"
	$(UV) run --frozen streamlit run dashboard.py --server.address '$(ADDRESS)' --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

# Installs Debian's chromium for the real-browser tests when it is missing (needs root and the package registry).
browser:
	@if ! command -v chromium >/dev/null 2>&1; then \
		if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
			(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "!!! could not install chromium: real-browser tests will be skipped"; \
		else echo "!!! chromium is not installed and cannot be installed here: real-browser tests will be skipped"; fi; \
	fi

test: setup browser
	$(UV) run --frozen pytest -q -n 2 --dist loadgroup

test-fast: setup
	$(UV) run --frozen pytest -q -n 2 -m "not e2e and not slow"

bench: setup
	$(UV) run --frozen python perf/run_all.py

screenshots: setup
	$(UV) run --frozen python tests/e2e/screenshots.py

sample: setup
	$(UV) run --frozen kap-outcomes sample --patients 1500 --seed 20261125 --out sample_data

clean:
	rm -rf $(VENV) .pytest_cache
