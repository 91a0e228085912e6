# ksef-relay: the obvious targets. `make run` and `make test` are the README's two commands.
.PHONY: setup run test fmt fmt-check lint build check clean

CARGO ?= cargo

## Install what the tests need beyond cargo: moto (AWS emulator) into .venv, xmllint.
setup:
	scripts/setup.sh

## The main job: the relay locally over the bundled sample invoices, with a final table.
run:
	$(CARGO) run --quiet -p ksef-relay -- run

## Every test (installs and starts the AWS emulator itself).
test:
	scripts/test.sh

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint: fmt-check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build:
	$(CARGO) build --workspace --release

## What CI runs.
check: test lint

clean:
	$(CARGO) clean
	rm -rf local-run
