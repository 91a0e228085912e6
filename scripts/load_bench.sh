#!/usr/bin/env bash
# The load bench: a release build of ksef-relay, then `ksef-relay load` with fixed numbers, its
# table printed (or its JSON with LOAD_JSON=1). Timings are printed, never asserted: compare runs
# on the same machine. The exit code is the run's (1 when an invoice is not in the simulator's
# ledger exactly once).
#
#   scripts/load_bench.sh                      # 1000 invoices, 1 seller, time scale 3600, memory
#   LOAD_INVOICES=10000 LOAD_SCALE=1 scripts/load_bench.sh     # issue 12's "Must show"
#   scripts/load_bench.sh --aws-endpoint http://127.0.0.1:5000  # extra arguments go to `load`
set -euo pipefail
cd "$(dirname "$0")/.."

invoices="${LOAD_INVOICES:-1000}"
sellers="${LOAD_SELLERS:-1}"
scale="${LOAD_SCALE:-3600}"
json=()
if [[ "${LOAD_JSON:-0}" == 1 ]]; then json=(--json); fi

cargo build --release --quiet -p ksef-relay
set -x
exec target/release/ksef-relay load --invoices "$invoices" --sellers "$sellers" \
    --sim-time-scale "$scale" "${json[@]}" "$@"
