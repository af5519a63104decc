# The two commands of the README, and their helpers. Each target installs what it needs.

CARGO ?= cargo

.PHONY: all setup build demo test lint unit bench clean

all: build

setup:
	./scripts/setup.sh

build: setup
	$(CARGO) build --release --locked

# The whole path on this machine: a simulated camera, the daemon, one trigger, one clip, and
# the officer desk (a program of its own) showing the alert.
demo: setup
	$(CARGO) build --release --locked -p alertclip-desk
	$(CARGO) run --release --locked -- demo

# Formatting, lints, then every test (unit and end to end against real GStreamer pipelines).
test: lint
	./scripts/setup.sh --test
	$(CARGO) test --workspace --locked

# Printed figures, measured by hand (not in CI): see benches/ingest.rs.
bench:
	./scripts/setup.sh --bench
	$(CARGO) build --release --locked --example retina_client
	$(CARGO) bench --locked --bench ingest
	$(CARGO) bench --locked --bench delivery
	$(CARGO) bench --locked --bench detect
	$(CARGO) bench --locked --bench desk
	$(CARGO) bench --locked --bench responses
	$(CARGO) bench --locked --bench stores

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	python3 scripts/module-cycles.py

clean:
	$(CARGO) clean
	rm -rf alertclip-demo
