# ksef-relay: the obvious targets. `make run` and `make test` are the README's two commands.
.PHONY: setup run load test fmt fmt-check lint build check clean infra-lint sam-build infra-check

CARGO ?= cargo

## Install what the tests need beyond cargo: moto (AWS emulator) into .venv, xmllint.
setup:
	scripts/setup.sh

## The main job: the relay locally over the bundled sample invoices, with a final table.
run:
	$(CARGO) run --quiet -p ksef-relay -- run

## The load bench: a release build, then `ksef-relay load` over 1000 generated invoices at time
## scale 3600 in memory (LOAD_INVOICES, LOAD_SELLERS, LOAD_SCALE, LOAD_JSON=1 to change); prints
## throughput, KSeF calls by kind, 429s, sessions and latency percentiles (docs/performance.md).
load:
	scripts/load_bench.sh

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

## The SAM template: cfn-lint and `sam validate --lint`, offline (tools from PyPI in .venv).
infra-lint: setup
	.venv/bin/cfn-lint infra/template.yaml infra/erp-seller-access.yaml
	SAM_CLI_TELEMETRY=0 .venv/bin/sam validate --lint --template infra/template.yaml

## `sam build` of every function with cargo-lambda (from .venv). CI builds x86_64: the arm64
## Rust std needs a rustup download outside the package registries (infra/README.md).
## SAM_ARCH=arm64 builds what AWS runs when that target is installed. SAM_BUILD_MODE=debug
## builds the dev profile (CI does: a cold release build of every function takes far longer).
SAM_ARCH ?= x86_64
SAM_BUILD_MODE ?= release
sam-build: setup
	SAM_BUILD_MODE=$(SAM_BUILD_MODE) scripts/sam_build.sh $(SAM_ARCH)

infra-check: infra-lint sam-build

## What CI runs (.ci/run).
check: test lint infra-lint
	$(MAKE) sam-build SAM_BUILD_MODE=debug

clean:
	$(CARGO) clean
	rm -rf local-run
