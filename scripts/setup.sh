#!/usr/bin/env bash
# Installs what the tests need beyond cargo, idempotently:
#   - the AWS emulator (moto in server mode) into .venv inside the repo (git-ignored);
#   - the template tools into the same .venv, all from PyPI: aws-sam-translator (SAM -> plain
#     CloudFormation for the template tests), cfn-lint and aws-sam-cli (`make infra-check`),
#     cargo-lambda and ziglang (what `sam build` uses to build the functions);
#   - Debian packages the tests call, when run as root with apt-get: libxml2-utils (xmllint) and
#     chromium + chromium-driver (the status page's headless-browser test).
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Checked hands-on with this project (docs/local-aws.md). aws-sam-cli pins its own
# aws-sam-translator; these are the versions it resolves to, installed together in one pip run.
MOTO_VERSION="5.2.5"
PY_TOOLS=(
  "moto[server]==${MOTO_VERSION}"
  "aws-sam-translator==1.115.0"
  "cfn-lint==1.58.0"
  "aws-sam-cli==1.170.0"
  "cargo-lambda==1.9.2"
  "ziglang==0.17.1"
)

missing=0
for tool in moto_server sam cfn-lint cargo-lambda python-zig; do
  [ -x ".venv/bin/${tool}" ] || missing=1
done
if [ "$missing" = 1 ] || ! .venv/bin/python -c 'import samtranslator' 2>/dev/null; then
  echo "setup: installing ${PY_TOOLS[*]} into .venv (about 1 to 3 minutes)"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "${PY_TOOLS[@]}"
fi

if ! command -v xmllint >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing libxml2-utils (xmllint) with apt-get"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libxml2-utils >/dev/null
  else
    echo "setup: xmllint is missing; install libxml2-utils (Debian/Ubuntu) to run the validator agreement tests" >&2
  fi
fi

if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium and chromium-driver with apt-get (the status page's browser test)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup: chromium/chromedriver are missing; install the Debian packages chromium and chromium-driver (as root) to run the status page's browser test" >&2
  fi
fi
