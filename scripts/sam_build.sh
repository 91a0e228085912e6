#!/usr/bin/env bash
# `sam build` of infra/template.yaml with cargo-lambda and zig from .venv (scripts/setup.sh).
# Usage: scripts/sam_build.sh [arm64|x86_64]   (default x86_64: see infra/README.md for why CI
# cannot build arm64 from the package registries alone).
#
# When every function's binary is in the workspace this is one plain `sam build`, exactly what a
# deployer runs. `sam build` ignores template Conditions and builds every function, so while a
# function's crate is not in the workspace (as the report function's was before issue #7 landed)
# the others are built one by one instead and the missing one is named; nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."

arch="${1:-x86_64}"
# SAM_BUILD_MODE=debug makes cargo-lambda build the dev profile (SAM's own switch); the default
# is the release profile that `sam deploy` ships.
mode="${SAM_BUILD_MODE:-release}"
export PATH="$PWD/.venv/bin:$PATH" SAM_CLI_TELEMETRY=0
# --no-cached: SAM's cache hashes every file under CodeUri, which is the workspace root with
# target/ (gigabytes, and changing under a concurrent cargo run: `sam build` then dies with
# FileNotFoundError). cargo's own incremental build is the cache.
build=(sam build --beta-features --no-cached --parameter-overrides "Architecture=${arch}"
  --build-dir "target/sam-build-${mode}")

# logical id and binary of each function in the template
mapfile -t functions < <(.venv/bin/python - <<'PY'
from samtranslator.yaml_helper import yaml_parse
t = yaml_parse(open("infra/template.yaml").read())
for k, r in t["Resources"].items():
    if r["Type"] == "AWS::Serverless::Function":
        print(k, r["Metadata"]["BuildProperties"]["Binary"])
PY
)
bins=$(cargo metadata --no-deps --format-version 1 | .venv/bin/python -c '
import json, sys
m = json.load(sys.stdin)
print(" ".join(t["name"] for p in m["packages"] for t in p["targets"] if "bin" in t["kind"]))')

present=() missing=()
for f in "${functions[@]}"; do
  read -r logical bin <<<"$f"
  if [[ " $bins " == *" $bin "* ]]; then present+=("$logical"); else missing+=("$logical($bin)"); fi
done

built() {
  for logical in "$@"; do
    test -x "target/sam-build-${mode}/${logical}/bootstrap" || { echo "sam-build: no bootstrap for ${logical}" >&2; exit 1; }
  done
}
start=$(date +%s)
if [ "${#missing[@]}" -eq 0 ]; then
  "${build[@]}"
  built "${present[@]}"
else
  echo "sam-build: no binary in the workspace for ${missing[*]}; building the others one by one" >&2
  for logical in "${present[@]}"; do
    "${build[@]}" "$logical"   # a one-function build replaces the build directory
    built "$logical"
  done
fi
echo "sam-build: ${#present[@]} functions built (${mode}) for ${arch} in $(( $(date +%s) - start )) s${missing:+; not built: ${missing[*]}}"
