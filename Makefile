# Set-up is part of every target: a fresh Debian machine with a Rust toolchain needs
# only `make demo` or `make test`.
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: deps build demo test lint unit bench-routing pyclients

# pingora's zlib-ng build script needs cmake.
deps:
	@command -v cmake >/dev/null 2>&1 || { \
		echo "installing cmake (needed to build pingora)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq cmake; }

build: deps
	$(CARGO) build --release

demo: deps
	$(CARGO) run --release -- demo

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# The official Python clients (`ollama`, `openai`) that tests/clients.rs runs against
# corral with a client key. A venv inside target/, so nothing touches the system
# Python; pip runs only when a package is missing. Debian's python3 needs
# python3-venv for `python3 -m venv`: installed here if the venv cannot be made.
PYCLIENTS := target/pyclients
pyclients:
	@$(PYCLIENTS)/bin/python -c 'import ollama, openai' 2>/dev/null || { \
		command -v python3 >/dev/null 2>&1 || { \
			echo "installing python3 (the Python client tests need it)"; \
			$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3; }; \
		rm -rf $(PYCLIENTS); \
		python3 -m venv $(PYCLIENTS) 2>/dev/null || { \
			echo "installing python3-venv (needed for python3 -m venv)"; \
			rm -rf $(PYCLIENTS); \
			$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && \
			python3 -m venv $(PYCLIENTS); } && \
		$(PYCLIENTS)/bin/python -m pip install -q ollama openai; }

test: lint pyclients
	$(CARGO) test --all-targets

# Compares corral's routing strategies with nginx on a matrix of simulated fleets and
# workloads (about 25 minutes on 2 cores); prints markdown tables, writes
# target/bench-results/routing_quality.json. QUICK=1 for a smoke run under two minutes;
# ARGS passes flags on, e.g. ARGS="--scenario fast-load,big-box --only corral-affinity".
# nginx is the baseline: installed from Debian if missing (nginx-light where the
# release still has it, else nginx).
bench-routing: deps
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
		$(SUDO) apt-get update -qq; \
		pkg=nginx-light; \
		apt-cache policy nginx-light 2>/dev/null | grep -q 'Candidate: [0-9]' || pkg=nginx; \
		echo "installing $$pkg (the benchmark's baseline)"; \
		$(SUDO) apt-get install -y -qq $$pkg; }
	$(CARGO) bench --bench routing_quality -- $(if $(filter-out 0,$(QUICK)),--quick) $(ARGS)
