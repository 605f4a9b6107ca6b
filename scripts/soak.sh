#!/usr/bin/env bash
# The soak: MESSAGES (default 1,000,000) of the load tool's stream through `payrules run` on a
# file source, with the SQLite state store and the loopback stub of commercetools, Checkout and
# the webhook receiver (examples/loadtest/soak.rs). Samples the worker's RSS and open file
# descriptors with its progress; prints them at 10 % of the messages and at the end, the peak,
# the duration and the rate; exits non-zero if RSS grew by more than 10 MB from 10 % to the end
# (or over the last 10 %), if fds grew by more than 5, or if the run did not make exactly the
# planned releases and cancels. Not run in CI (CI runs tests/soak.rs: 50,000 messages).
#
#   bash scripts/soak.sh [MESSAGES]
#
# SOAK_PROFILE picks the cargo profile (default `profiling`: release code with thin LTO, quick
# to build; `release` is the shipped build, fat LTO, ~9 min cold). Extra loadtest options can be
# given after MESSAGES, e.g. `--soak-grace 1h` or `--worker-concurrency 8`.
# Report: target/loadtest/soak.json; the worker's log: target/loadtest/worker-soak.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

messages="${1:-1000000}"
shift || true
profile="${SOAK_PROFILE:-profiling}"

cargo build --profile "$profile" --bin payrules --example loadtest
bin="target/$profile"
exec "$bin/examples/loadtest" --soak --messages "$messages" --worker-bin "$bin/payrules" "$@"
