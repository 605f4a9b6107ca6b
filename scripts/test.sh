#!/usr/bin/env bash
# Runs payrules' whole test suite on a fresh machine: installs the local test peers (checks the
# Pub/Sub emulator, installs moto, fauxqs, commercetools-mock into .peers/), then
# `cargo test --all-targets` and `cargo test --doc`. With arguments, runs `cargo test ARGS...` instead (after the same
# install), e.g. `bash scripts/test.sh --test it peers_smoke::`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/peers/install.sh
if [[ $# -eq 0 ]]; then
  cargo test --all-targets
  # The documentation's examples (`--all-targets` does not run them).
  cargo test --doc
else
  cargo test "$@"
fi
