#!/usr/bin/env bash
# The README's test command (`make test`): installs what the tests need, starts ONE moto server
# on a free loopback port for the whole run, runs every test in the workspace, stops moto.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
mkdir -p target
# moto with its SQS delete/receive race fixed (scripts/moto_server.py says why).
.venv/bin/python scripts/moto_server.py -H 127.0.0.1 -p "$port" >target/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then break; fi
  sleep 0.1
done
export KSEF_RELAY_TEST_AWS_ENDPOINT="http://127.0.0.1:${port}"
echo "test: moto server at ${KSEF_RELAY_TEST_AWS_ENDPOINT} (log: target/moto.log)"

# Arguments replace the default selection, e.g. `scripts/test.sh -p relay-domain` or
# `scripts/test.sh -p relay-tests --test pipeline_on_emulator` (then only what they name runs).
if [ "$#" -eq 0 ]; then set -- --workspace --all-targets; fi
cargo test "$@"
