#!/usr/bin/env bash
# Installs what the tests need beyond cargo, idempotently:
#   - the AWS emulator (moto in server mode) into .venv inside the repo (git-ignored);
#   - Debian packages the tests call (libxml2-utils for xmllint), when run as root with apt-get.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION="5.2.5"   # checked hands-on with this project (docs/local-aws.md)

if [ ! -x .venv/bin/moto_server ]; then
  echo "setup: installing moto[server]==${MOTO_VERSION} into .venv (about 30 s)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}"
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
