# Set-up is part of every target: a fresh Debian machine with a Rust toolchain needs
# only `make demo` or `make test`.
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: deps build demo test lint unit bench-routing bench-load

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

test: lint
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

# Requests and streamed chunks through corral next to bare Pingora (examples/
# bare_pingora.rs), nginx and HAProxy, all with two workers in front of one fast backend
# (about 25 minutes on 2 cores); prints markdown tables, writes
# target/bench-results/load.json. QUICK=1 for a smoke run under three minutes; ARGS
# passes flags on, e.g. ARGS="--only corral,bare --conns 64". wrk, nginx (the backend and
# a baseline) and HAProxy are installed from Debian if missing.
bench-load: deps
	@have() { command -v $$1 >/dev/null 2>&1 || [ -x /usr/sbin/$$1 ]; }; \
	if ! have wrk || ! have nginx || ! have haproxy; then \
		$(SUDO) apt-get update -qq; \
		pkgs=""; \
		have wrk || pkgs="$$pkgs wrk"; \
		have haproxy || pkgs="$$pkgs haproxy"; \
		if ! have nginx; then \
			nginx=nginx-light; \
			apt-cache policy nginx-light 2>/dev/null | grep -q 'Candidate: [0-9]' || nginx=nginx; \
			pkgs="$$pkgs $$nginx"; \
		fi; \
		echo "installing$$pkgs (the load benchmark's tools)"; \
		$(SUDO) apt-get install -y -qq $$pkgs; \
	fi
	$(CARGO) build --release --example bare_pingora
	$(CARGO) bench --bench load -- $(if $(filter-out 0,$(QUICK)),--quick) $(ARGS)
