#!/usr/bin/env bash
# Installs the local test peers used by payrules' integration tests into <repo>/.peers/ (gitignored):
#
#   .peers/venv/            Python venv with moto[server] (SQS, high fidelity)       -> bin/moto_server
#                             and, for the release-webhook receiver tests (examples/receivers/),
#                             standardwebhooks + jsonschema                             -> bin/python
#   .peers/node/            npm ci of scripts/peers/package.json + package-lock.json:
#                             fauxqs 1.9.2 (SQS, fast), @labdigital/commercetools-mock 4.4.0,
#                             standardwebhooks 1.3.0 (webhook receiver tests)
#   .peers/pubsub-logging.properties   java.util.logging config for the Pub/Sub emulator (WARNING)
#   .peers/env              KEY=VALUE lines with absolute paths, read by tests/it/support/peers.rs
#
# The Google Pub/Sub emulator is not installed here: it comes from the Debian package
# google-cloud-cli-pubsub-emulator (preinstalled on the project's machines); this script only
# locates its launcher and checks that java runs.
#
# Idempotent: each part keeps a stamp keyed on what it was built from (pinned versions, lockfile
# hash, interpreter versions) and is skipped when the stamp matches. Fails (exit 1) with a message
# naming the part that could not be installed. Usage: bash scripts/peers/install.sh [--force]
set -euo pipefail

MOTO_VERSION="5.2.5"
# The Python side of tests/it/webhook_receivers.rs: the receiver recipe verifies with
# standardwebhooks, and the payloads are checked against
# fixtures/schema/release-webhook.schema.json with jsonschema.
STANDARDWEBHOOKS_PY_VERSION="1.3.0"
JSONSCHEMA_VERSION="4.26.0"
STAMP_SCHEMA="1"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
repo="$(cd "$here/../.." && pwd -P)"
peers="$repo/.peers"
force=0
[[ "${1:-}" == "--force" ]] && force=1

log() { printf 'peers/install: %s\n' "$*" >&2; }
die() {
  printf '\npeers/install: ERROR: %s\n' "$*" >&2
  printf 'peers/install: the integration tests need these peers; fix the above and re-run scripts/peers/install.sh\n\n' >&2
  exit 1
}
trap 'rc=$?; [[ $rc -ne 0 ]] && printf "peers/install: FAILED (exit %s) at line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2' ERR

# Runs a noisy command with its output in a log file; on failure prints the log tail and dies.
run_logged() {
  local what="$1" logfile="$2"
  shift 2
  if ! "$@" >"$logfile" 2>&1; then
    printf '\n--- last 40 lines of %s ---\n' "$logfile" >&2
    tail -n 40 "$logfile" >&2 || true
    die "$what failed: $*"
  fi
}

hash_of() { sha256sum | cut -c1-64; }

mkdir -p "$peers"
t_all=$SECONDS

# --- java + Pub/Sub emulator (Debian package) ----------------------------------------------------
if ! command -v java >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "java not found; installing openjdk-17-jre-headless with apt-get"
    run_logged "apt-get install openjdk-17-jre-headless" "$peers/apt.log" \
      bash -c 'apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless'
  fi
  command -v java >/dev/null 2>&1 || die "java is not on PATH (the Pub/Sub emulator needs Java >= 11; e.g. apt-get install openjdk-17-jre-headless)"
fi
java -version >/dev/null 2>&1 || die "'java -version' fails: $(java -version 2>&1 | head -3)"
java_bin="$(command -v java)"

command -v dpkg >/dev/null 2>&1 || die "dpkg not found: cannot locate the Debian package google-cloud-cli-pubsub-emulator"
emulator="$(dpkg -L google-cloud-cli-pubsub-emulator 2>/dev/null | grep 'bin/cloud-pubsub-emulator$' | head -n1 || true)"
[[ -n "$emulator" ]] || die "the Debian package google-cloud-cli-pubsub-emulator is not installed (it provides bin/cloud-pubsub-emulator; it comes from Google's Cloud SDK apt repository)"
[[ -x "$emulator" ]] || die "Pub/Sub emulator launcher $emulator is not executable"

logging_props="$peers/pubsub-logging.properties"
cat >"$logging_props.tmp" <<'EOF'
handlers=java.util.logging.ConsoleHandler
.level=WARNING
java.util.logging.ConsoleHandler.level=WARNING
EOF
mv -f "$logging_props.tmp" "$logging_props"

# --- Python venv with moto[server] ---------------------------------------------------------------
python_bin="${PAYRULES_PYTHON:-}"
if [[ -z "$python_bin" ]]; then
  python_bin="$(command -v python3 || true)"
fi
[[ -n "$python_bin" ]] || die "python3 not found (needed for moto[server]); set PAYRULES_PYTHON to a Python >= 3.9"
py_version="$("$python_bin" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')" \
  || die "$python_bin does not run"
"$python_bin" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
  || die "moto $MOTO_VERSION needs Python >= 3.9, $python_bin is $py_version (set PAYRULES_PYTHON)"

venv="$peers/venv"
venv_key="$(printf 'schema=%s moto=%s python=%s' "$STAMP_SCHEMA" "$MOTO_VERSION" "$py_version" | hash_of)"
if [[ $force == 0 && -f "$venv/.payrules-stamp" && "$(cat "$venv/.payrules-stamp")" == "$venv_key" && -x "$venv/bin/moto_server" ]]; then
  log "moto $MOTO_VERSION: up to date"
else
  t=$SECONDS
  log "moto $MOTO_VERSION: creating venv with Python $py_version (log: $peers/pip.log)"
  rm -rf "$venv"
  run_logged "creating a venv with $python_bin" "$peers/pip.log" "$python_bin" -m venv "$venv"
  run_logged "pip install moto[server]==$MOTO_VERSION" "$peers/pip.log" \
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input "moto[server]==$MOTO_VERSION"
  [[ -x "$venv/bin/moto_server" ]] || die "pip installed moto but $venv/bin/moto_server is missing"
  "$venv/bin/python" -c 'import moto.server' >/dev/null 2>&1 || die "moto is installed but 'import moto.server' fails"
  printf '%s' "$venv_key" >"$venv/.payrules-stamp"
  log "moto $MOTO_VERSION: installed in $((SECONDS - t)) s"
fi

# The webhook receivers' packages go into the same venv with their own stamp (rebuilt with the venv,
# and a change of their versions does not reinstall moto).
receivers_key="$(printf 'schema=%s venv=%s standardwebhooks=%s jsonschema=%s' "$STAMP_SCHEMA" "$venv_key" \
  "$STANDARDWEBHOOKS_PY_VERSION" "$JSONSCHEMA_VERSION" | hash_of)"
receivers_stamp="$venv/.payrules-receivers-stamp"
if [[ $force == 0 && -f "$receivers_stamp" && "$(cat "$receivers_stamp")" == "$receivers_key" ]]; then
  log "standardwebhooks $STANDARDWEBHOOKS_PY_VERSION (Python), jsonschema $JSONSCHEMA_VERSION: up to date"
else
  t=$SECONDS
  run_logged "pip install standardwebhooks==$STANDARDWEBHOOKS_PY_VERSION jsonschema==$JSONSCHEMA_VERSION" "$peers/pip-receivers.log" \
    "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
    "standardwebhooks==$STANDARDWEBHOOKS_PY_VERSION" "jsonschema==$JSONSCHEMA_VERSION"
  "$venv/bin/python" -c 'import standardwebhooks, jsonschema' >/dev/null 2>&1 \
    || die "pip installed standardwebhooks and jsonschema but 'import standardwebhooks, jsonschema' fails"
  printf '%s' "$receivers_key" >"$receivers_stamp"
  log "standardwebhooks $STANDARDWEBHOOKS_PY_VERSION (Python), jsonschema $JSONSCHEMA_VERSION: installed in $((SECONDS - t)) s"
fi

# --- npm: fauxqs + commercetools-mock + standardwebhooks ------------------------------------------
command -v node >/dev/null 2>&1 || die "node not found (fauxqs and commercetools-mock need Node.js >= 20)"
command -v npm >/dev/null 2>&1 || die "npm not found (needed to install fauxqs and commercetools-mock)"
node_bin="$(command -v node)"
node_version="$(node --version)"
node_major="${node_version#v}"
node_major="${node_major%%.*}"
[[ "$node_major" -ge 20 ]] || die "Node.js $node_version is too old: fauxqs 1.9.2 needs >= 20"
for f in package.json package-lock.json; do
  [[ -f "$here/$f" ]] || die "missing $here/$f"
done

node_dir="$peers/node"
node_key="$(cat "$here/package.json" "$here/package-lock.json" <(printf 'schema=%s node=%s' "$STAMP_SCHEMA" "$node_version") | hash_of)"
if [[ $force == 0 && -f "$node_dir/.payrules-stamp" && "$(cat "$node_dir/.payrules-stamp")" == "$node_key" \
  && -f "$node_dir/node_modules/fauxqs/package.json" && -f "$node_dir/node_modules/@labdigital/commercetools-mock/package.json" \
  && -f "$node_dir/node_modules/standardwebhooks/package.json" ]]; then
  log "npm peers (fauxqs, commercetools-mock, standardwebhooks): up to date"
else
  t=$SECONDS
  log "npm peers: npm ci (log: $peers/npm.log)"
  rm -rf "$node_dir"
  mkdir -p "$node_dir"
  cp "$here/package.json" "$here/package-lock.json" "$node_dir/"
  # --ignore-scripts: nothing here needs an install script (msw's postinstall only copies a
  # service worker for browsers). --engine-strict=false: commercetools-mock 4.4.0 declares
  # node >= 22 but works on 20 for the in-memory server (see shared/research/peers.md).
  run_logged "npm ci for scripts/peers/package-lock.json" "$peers/npm.log" \
    npm ci --prefix "$node_dir" --ignore-scripts --engine-strict=false --no-audit --no-fund --loglevel=error
  for p in fauxqs:1.9.2 @labdigital/commercetools-mock:4.4.0 standardwebhooks:1.3.0; do
    name="${p%:*}" want="${p##*:}"
    got="$(node -p "require('$node_dir/node_modules/$name/package.json').version" 2>/dev/null || true)"
    [[ "$got" == "$want" ]] || die "npm installed $name '$got', expected $want (check scripts/peers/package-lock.json)"
  done
  printf '%s' "$node_key" >"$node_dir/.payrules-stamp"
  log "npm peers: installed in $((SECONDS - t)) s"
fi

# --- .peers/env ----------------------------------------------------------------------------------
cat >"$peers/env.tmp" <<EOF
# Written by scripts/peers/install.sh; read by tests/it/support/peers.rs. Absolute paths; do not edit.
PAYRULES_PEER_PUBSUB_EMULATOR=$emulator
PAYRULES_PEER_PUBSUB_LOGGING=$logging_props
PAYRULES_PEER_JAVA=$java_bin
PAYRULES_PEER_MOTO=$venv/bin/moto_server
PAYRULES_PEER_PYTHON=$venv/bin/python
PAYRULES_PEER_NODE=$node_bin
PAYRULES_PEER_NODE_DIR=$node_dir
PAYRULES_PEER_FAUXQS_SCRIPT=$here/fauxqs-server.mjs
PAYRULES_PEER_CTMOCK_SCRIPT=$here/ctmock-server.mjs
EOF
mv -f "$peers/env.tmp" "$peers/env"
log "ready in $((SECONDS - t_all)) s: $peers/env"
