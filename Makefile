# Set-up is part of every target: a fresh Debian machine with a Rust toolchain needs
# only `make demo` or `make test`.
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: deps build demo test lint unit bench-routing bench-load pyclients install uninstall

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

# Installs the release binary, the example config (only if none is there: an existing
# /etc/corral/corral.yaml is kept) and the systemd unit, whose paths follow PREFIX.
# DESTDIR stages into a directory (packaging). Build first as yourself, then:
#   make build && sudo make install && sudo systemctl daemon-reload
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
BIN := target/release/corral

install:
	@test -x $(BIN) || { echo "$(BIN) is missing: run 'make build' first (as yourself, not root)"; exit 1; }
	install -Dm755 $(BIN) $(DESTDIR)$(PREFIX)/bin/corral
	install -d -m755 $(DESTDIR)$(SYSCONFDIR)/corral
	test -e $(DESTDIR)$(SYSCONFDIR)/corral/corral.yaml || \
		install -m644 conf/corral.yaml $(DESTDIR)$(SYSCONFDIR)/corral/corral.yaml
	install -d -m755 $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/corral|$(PREFIX)/bin/corral|g' \
		-e 's|/etc/corral/|$(SYSCONFDIR)/corral/|g' \
		-e 's|/usr/local/share/doc/corral|$(PREFIX)/share/doc/corral|g' \
		systemd/corral.service > $(DESTDIR)$(UNITDIR)/corral.service
	chmod 644 $(DESTDIR)$(UNITDIR)/corral.service
	install -Dm644 README.md $(DESTDIR)$(PREFIX)/share/doc/corral/README.md

# Leaves the config in place.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/corral $(DESTDIR)$(UNITDIR)/corral.service
	rm -rf $(DESTDIR)$(PREFIX)/share/doc/corral

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
	$(CARGO) build --release --example bare_pingora --example bare_pingora_mimalloc
	$(CARGO) bench --bench load -- $(if $(filter-out 0,$(QUICK)),--quick) $(ARGS)
