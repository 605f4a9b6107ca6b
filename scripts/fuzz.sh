#!/usr/bin/env bash
# Fuzzes the notification decoder and the configuration loader with cargo-fuzz (libFuzzer):
#
#   decode  payrules::message::decode on arbitrary bytes (then the accessors and the error text)
#   config  a TOML file [NUL, then NAME=VALUE environment lines] through toml::from_str::<FileConfig>
#           + build/rules/to_masked_toml, load_with(Some(file), env) and load_with(None, env)
#
# Each must return Ok or Err on any input, never panic. Not run in CI.
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]      # default: 300 s for each of decode, config
#
# Installs cargo-fuzz when missing; seeds fuzz/corpus/<target>/ (gitignored) from the fixtures
# and the repository's TOML files; writes a libFuzzer dictionary beside each corpus; runs the
# targets one after the other. Prints, per target, the executions done and whether it crashed,
# and exits non-zero if any did (the input is in fuzz/artifacts/<target>/, the log beside it).
#
# Only stable Rust is needed: RUSTC_BOOTSTRAP=1 lets it take cargo-fuzz's -Z flags.
# FUZZ_SANITIZER: address (default) or none (faster; panics are still caught).
# FUZZ_JOBS: cargo build jobs (default 2). FUZZ_ARGS: more libFuzzer flags, e.g. -seed=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

seconds="${1:-300}"
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(decode config)
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${FUZZ_JOBS:-2}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# --- seeds -----------------------------------------------------------------------------------

# seed DIR: stdin is one input; stored under its SHA-1, as libFuzzer names corpus files.
seed() {
  local tmp
  tmp="$(mktemp)"
  cat >"$tmp"
  if [[ -s "$tmp" ]]; then
    mv "$tmp" "$1/$(sha1sum "$tmp" | cut -d' ' -f1)"
  else
    rm -f "$tmp"
  fi
}

# seed_lines DIR FILE: each non-empty line of FILE is one input.
seed_lines() {
  local line
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -n "$line" ]] && printf '%s' "$line" | seed "$1"
  done <"$2"
}

seed_decode() {
  local dir="fuzz/corpus/decode" f
  mkdir -p "$dir"
  # Every file under fixtures/messages (bad ones included); .jsonl files line by line.
  while IFS= read -r -d '' f; do
    case "$f" in
      *.jsonl) seed_lines "$dir" "$f" ;;
      *) seed "$dir" <"$f" ;;
    esac
  done < <(find fixtures/messages -type f -print0)
  # The scenarios' input messages (their *.expected.jsonl are payrules' output, not messages).
  for f in fixtures/scenarios/*.jsonl; do
    [[ "$f" == *.expected.jsonl ]] || seed_lines "$dir" "$f"
  done
  # Dictionary: the keys and short string values of the fixture messages.
  {
    printf '"{"\n"}"\n"["\n"]"\n"null"\n"true"\n"false"\n"\\\\u0000"\n"\\\\ud800"\n'
    cat fixtures/messages/*.json fixtures/scenarios/*.jsonl 2>/dev/null \
      | grep -oE '"[A-Za-z][A-Za-z0-9_.:-]{0,39}"' | grep '[a-z]' \
      | grep -vE '^"[0-9a-f]{8}-[0-9a-f]{4}-' | sort -u \
      | sed 's/"/\\"/g; s/.*/"&"/'
  } >fuzz/corpus/decode.dict
}

# The options (TOML path and environment name) read from the OPTIONS table: "a,b,c|NAME".
options() {
  sed -n '/^pub const OPTIONS/,/^];/p' src/config/options.rs | tr -d '\n' \
    | grep -oE 'opt!\( *\[[^]]*\] *, *"[A-Z0-9_]+"' \
    | sed -E 's/opt!\( *\[([^]]*)\] *, *"([A-Z0-9_]+)"/\1|\2/; s/[" ]//g'
}

seed_config() {
  local dir="fuzz/corpus/config" f
  mkdir -p "$dir"
  # Every TOML file of the repository but Cargo's own.
  while IFS= read -r -d '' f; do
    case "$(basename "$f")" in Cargo.toml | Cargo.lock | rustfmt.toml | clippy.toml) continue ;; esac
    seed "$dir" <"$f"
  done < <(find . \( -path ./target -o -path ./fuzz -o -path ./.git -o -path ./.peers \) -prune \
    -o -name '*.toml' -type f -print0)
  # Hand-written: a file, then NUL, then environment lines (the environment wins).
  seed "$dir" <<'EOF'
source = "file"
dry_run = true

[file]
path = "fixtures/scenarios/01-authorized-then-order.jsonl"

[state]
url = "memory:"

[rules.cancel_orphaned_authorization]
grace_period = "1h 30m"
EOF
  seed "$dir" <<'EOF'
source = "pubsub"

[pubsub]
subscription = "projects/p/subscriptions/payrules"
streams = 2
max_outstanding_messages = 500
dead_letter_topic = "projects/p/topics/parked"

[state]
url = "postgres://payrules:hunter2@db:5432/payrules"
claim_lease = "20s"

[commercetools]
project_key = "acme"
client_id = "id"
client_secret = "secret"
auth_url = "https://auth.europe-west1.gcp.commercetools.com"
api_url = "https://api.europe-west1.gcp.commercetools.com"
scopes = "manage_payments:acme manage_orders:acme"
timeout = "10s"

[release]
webhook_url = "https://fulfillment.example.com/hooks/release"
webhook_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
order_update = "transitionState"
state_key = "released"

[rules.capture_on_shipment]
enabled = true
on = "Delivered"

[worker]
concurrency = 8
max_deliveries = 3
shutdown_timeout = "30s"
retry_delay = "1s"
progress_interval = "0s"
max_message_bytes = 1048576

[http]
addr = "0.0.0.0:9464"
EOF
  seed "$dir" <<'EOF'
source = "sqs"

[sqs]
queue_url = "https://sqs.eu-central-1.amazonaws.com/123456789012/payrules"
pollers = 4
visibility_timeout = "60s"

[release]
webhook_url = "http://localhost:8080/release"
allow_insecure_webhook = true
order_update = "setCustomField"
custom_field_name = "released"
custom_field_value = "{\"at\": 1}"

[cancel]
payment_intent_action = "reversePayment"
payment_interfaces = "checkout-eu"
EOF
  printf 'source = "file"\n\0PAYRULES_SOURCE=sqs\nPAYRULES_SQS_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/1/q\nPAYRULES_DRY_RUN=yes\nPAYRULES_GRACE_PERIOD=2s\nPAYRULES_CONCURRENCY=0\n' | seed "$dir"
  printf '\0PAYRULES_SOURCE=file\nPAYRULES_FILE_PATH=-\nPAYRULES_STATE_URL=sqlite://payrules.db\nPAYRULES_RELEASE_ORDER_UPDATE=changeShipmentState\nPAYRULES_RELEASE_SHIPMENT_STATE=Ready\nPAYRULES_CAPTURE_ON=Shipped\nPAYRULES_HTTP_ADDR=[::1]:9464\n' | seed "$dir"
  printf '\0CTP_PROJECT_KEY=acme\nCTP_CLIENT_ID=id\nCTP_CLIENT_SECRET=s\nCTP_AUTH_URL=https://auth.us-central1.gcp.commercetools.com\nCTP_API_URL=https://api.example.com\nCTP_CHECKOUT_URL=https://checkout.example.com\nPAYRULES_HTTP_TIMEOUT=1h 30m\n' | seed "$dir"
  # Wrong types and unknown keys.
  printf 'source = 1\ndry_run = "maybe"\nunknown = true\n[worker]\nconcurrency = -1\nmax_deliveries = 99999999999\n[rules.cancel_orphaned_authorization]\ngrace_period = "forever"\n' | seed "$dir"
  # Dictionary: every option's TOML keys, table headers, dotted keys and environment names.
  {
    printf '"["\n"]"\n"[["\n"="\n" = "\n"\\"\\"\\"\"\n"\x27\x27\x27"\n"\\x00"\n"true"\n"false"\n'
    printf '"file"\n"pubsub"\n"sqs"\n"memory:"\n"sqlite://"\n"postgres://"\n"https://"\n"http://"\n'
    printf '"10m"\n"1h 30m"\n"0s"\n"transitionState"\n"changeOrderState"\n"changeShipmentState"\n'
    printf '"setCustomField"\n"cancelPayment"\n"reversePayment"\n"Shipped"\n"Delivered"\n"whsec_"\n'
    options | while IFS='|' read -r path env; do
      for k in ${path//,/ }; do printf '"%s"\n' "$k"; done
      printf '"%s"\n' "${path//,/.}"
      [[ "$path" == *,* ]] && printf '"[%s]"\n' "$(echo "${path%,*}" | tr ',' '.')"
      printf '"%s="\n' "$env"
    done
  } | sort -u >fuzz/corpus/config.dict
}

# --- run -------------------------------------------------------------------------------------

declare -A max_len=([decode]=65536 [config]=8192)

echo "== building the fuzz targets (sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
  (cd fuzz && cargo fuzz build -s "$sanitizer" "$t")
done

failed=0
summary=()
for t in "${targets[@]}"; do
  "seed_$t"
  mkdir -p "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t.log"
  echo "== $t: ${seconds}s, corpus fuzz/corpus/$t ($(find "fuzz/corpus/$t" -type f | wc -l) inputs), log $log"
  start=$(date +%s)
  set +e
  (cd fuzz && cargo fuzz run -s "$sanitizer" "$t" -- \
    -max_total_time="$seconds" -max_len="${max_len[$t]}" -timeout=10 \
    -dict="corpus/$t.dict" -print_final_stats=1 ${FUZZ_ARGS:-}) >"$log" 2>&1
  rc=$?
  set -e
  took=$(($(date +%s) - start))
  done_line="$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 || true)"
  runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)"
  [[ -n "$runs" ]] || runs="$(echo "$done_line" | grep -oE '[0-9]+' | head -1 || true)"
  rate="$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)"
  if [[ $rc -eq 0 ]]; then
    result="no crash"
  else
    failed=1
    artifact="$(grep -oE 'Test unit written to [^ ]+' "$log" | tail -1 | sed 's/Test unit written to //' || true)"
    [[ -z "$artifact" || "$artifact" == /* ]] || artifact="fuzz/$artifact"
    artifact="${artifact#"$root"/}"
    result="CRASH (exit $rc) — input: ${artifact:-fuzz/artifacts/$t/}; log: $log"
    grep -E "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" | head -5 | sed 's/^/   /' || true
    if [[ -f "$artifact" ]]; then
      echo "   base64: $(base64 -w0 "$artifact" | head -c 2000)"
      echo "   again:  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run -s $sanitizer $t ${artifact#fuzz/})"
    fi
  fi
  [[ -n "$done_line" ]] && echo "   $done_line"
  line="$t: ${runs:-?} executions in ${took}s (${rate:-?} exec/s), $result"
  echo "   $line"
  summary+=("$line")
done

echo "== summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, sanitizer $sanitizer)"
printf '   %s\n' "${summary[@]}"
exit "$failed"
