#!/usr/bin/env bash
# Every check the project has, in the order a failure is cheapest to see:
# formatting, lints, all tests (unit, integration, doc, benches in test mode, examples), and the
# checks that need real tools. It installs what those checks need on a bare Debian machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# Installs Debian packages whose command is missing (`need COMMAND PACKAGE`).
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    step "installing $2 (for $1)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "scripts/test.sh: $1 is missing; install the Debian package $2" >&2
        exit 1
    fi
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

need python3 python3
need promtool prometheus
need curl curl
need node nodejs
need npm npm
need redis-server redis-server
need openssl openssl

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --all-targets --all-features -- -D warnings

step "cargo test (unit, integration, benches and examples in test mode)"
cargo test --all-targets --all-features

step "cargo test --doc"
cargo test --doc --all-features

step "cargo doc (warnings are errors: broken links, missing docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --all-features --quiet

# The scrape the telemetry test rendered from a small scenario (tests/telemetry.rs).
step "promtool check metrics on a real scrape"
scrape=target/telemetry-scrape.prom
[ -s "$scrape" ] || { echo "scripts/test.sh: $scrape was not written by cargo test" >&2; exit 1; }
lint=$(promtool check metrics <"$scrape" 2>&1) || { echo "$lint" >&2; exit 1; }
if [ -n "$lint" ]; then
    echo "$lint" >&2
    echo "scripts/test.sh: promtool check metrics reported problems in $scrape" >&2
    exit 1
fi

# Alert rules (promtool unit tests), the dashboard against Grafana's schema, and the end-to-end
# check with a real Prometheus scraping examples/scenario.rs.
scripts/dashboards.sh

step "examples run"
cargo run --quiet --example classify >/dev/null

# The official OpenAI and Anthropic SDKs, Python and Node, through a real proxy in front of the
# simulated provider (examples/sdk_fixture.rs): answers, embeddings, typed errors with the upstream's
# code, a broken stream, failover across protocols.
step "the OpenAI Python SDK against the proxy (scripts/sdk/openai_sdk_check.py)"
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "scripts/test.sh: python3 cannot make a virtualenv; install the Debian package python3-venv" >&2
        exit 1
    fi
    [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi
venv=target/sdk-venv
if ! cmp -s scripts/sdk/requirements.txt "$venv/requirements.txt"; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/sdk/requirements.txt
    cp scripts/sdk/requirements.txt "$venv/requirements.txt"
fi
cargo build --quiet --example sdk_fixture
sdk_tmp=$(mktemp -d)
mkfifo "$sdk_tmp/stdin"
# The fixture serves until its stdin closes: fd 3 holds the fifo open, so it also stops when
# this script exits for any reason.
target/debug/examples/sdk_fixture <"$sdk_tmp/stdin" >"$sdk_tmp/out" 2>"$sdk_tmp/err" &
sdk_pid=$!
exec 3>"$sdk_tmp/stdin"
stop_fixture() {
    exec 3>&-
    kill "$sdk_pid" 2>/dev/null || true
    wait "$sdk_pid" 2>/dev/null || true
    rm -rf "$sdk_tmp"
}
trap stop_fixture EXIT
deadline=$((SECONDS + 20))
until [ -s "$sdk_tmp/out" ]; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "$sdk_pid" 2>/dev/null; then
        cat "$sdk_tmp/err" >&2
        echo "scripts/test.sh: examples/sdk_fixture did not start" >&2
        exit 1
    fi
    sleep 0.2
done
"$venv/bin/python" scripts/sdk/openai_sdk_check.py "$(sed -n 1p "$sdk_tmp/out")" "$(sed -n 2p "$sdk_tmp/out")" || {
    cat "$sdk_tmp/err" >&2
    echo "scripts/test.sh: the OpenAI SDK check failed" >&2
    exit 1
}
step "the Anthropic Python SDK against the proxy (scripts/sdk/anthropic_sdk_check.py)"
"$venv/bin/python" scripts/sdk/anthropic_sdk_check.py "$(sed -n 1p "$sdk_tmp/out")" || {
    cat "$sdk_tmp/err" >&2
    echo "scripts/test.sh: the Anthropic SDK check failed" >&2
    exit 1
}
# The official Node SDKs (openai, @anthropic-ai/sdk; exact pins in scripts/sdk/package-lock.json)
# against the same fixture, installed into target/sdk-node again only when the lock file changes.
# The script runs from there (a copy), so that its imports find the SDKs.
step "the OpenAI and Anthropic Node SDKs against the proxy (scripts/sdk/node_sdk_check.mjs)"
node_sdk=target/sdk-node
if [ ! -f "$node_sdk/node_modules/.package-lock.json" ] ||
    ! cmp -s scripts/sdk/package-lock.json "$node_sdk/node_modules/.lock-copy"; then
    rm -rf "$node_sdk"
    mkdir -p "$node_sdk"
    cp scripts/sdk/package.json scripts/sdk/package-lock.json "$node_sdk/"
    (cd "$node_sdk" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error &&
        cp package-lock.json node_modules/.lock-copy)
fi
cp scripts/sdk/node_sdk_check.mjs "$node_sdk/"
node "$node_sdk/node_sdk_check.mjs" "$(sed -n 1p "$sdk_tmp/out")" || {
    cat "$sdk_tmp/err" >&2
    echo "scripts/test.sh: the Node SDK check failed" >&2
    exit 1
}
stop_fixture
trap - EXIT

# The systemd unit: `verify` needs ExecStart's binary to exist, so a copy of the unit runs the
# binary just built; SYSTEMD_UNIT_PATH keeps the host's own units out of it. verify reports an
# unknown key or a bad value as a warning on the unit's line, so any line naming the unit fails.
unit=examples/llm-failover.service
if command -v systemd-analyze >/dev/null 2>&1; then
    step "systemd-analyze verify $unit"
    cargo build --quiet --bin llm-failover
    unit_tmp=$(mktemp -d)
    sed "s#^ExecStart=/usr/local/bin/llm-failover #ExecStart=$PWD/target/debug/llm-failover #" \
        "$unit" >"$unit_tmp/llm-failover.service"
    grep -q "^ExecStart=$PWD/target/debug/llm-failover serve " "$unit_tmp/llm-failover.service" || {
        echo "scripts/test.sh: $unit: ExecStart is not /usr/local/bin/llm-failover serve ..." >&2
        exit 1
    }
    out=$(SYSTEMD_UNIT_PATH="$unit_tmp:" systemd-analyze verify --man=no \
        "$unit_tmp/llm-failover.service" 2>&1) || { echo "$out" >&2; exit 1; }
    if echo "$out" | grep -F llm-failover.service >&2; then
        echo "scripts/test.sh: systemd-analyze verify warned about $unit" >&2
        exit 1
    fi
    # The sandbox stays tight: exposure at most 2.0 of 10 ("OK"), where systemd can score it.
    if systemd-analyze security --help 2>/dev/null | grep -q -- --offline; then
        sec=$(systemd-analyze security --offline=yes --threshold=20 \
            "$unit_tmp/llm-failover.service" 2>&1) || {
            echo "$sec" >&2
            echo "scripts/test.sh: $unit: the sandbox's exposure is above 2.0" >&2
            exit 1
        }
        echo "$sec" | tail -n 1
    fi
    rm -rf "$unit_tmp"
else
    step "systemd-analyze verify skipped: systemd-analyze is not installed (Debian package systemd)"
fi

# The classifier against the replaced system's own cases (shared/ sits beside the checkout).
parity=../shared/tools/parity
corpus=../shared/conformance/openclaw-parity.jsonl
if [ -x "$parity" ] && [ -f "$corpus" ]; then
    step "classifier parity with the replaced system"
    out=$("$parity" "$corpus" -- target/debug/llm-failover classify)
    echo "$out" | tail -n 2
    pct=$(echo "$out" | sed -n 's/^agreement .* = \([0-9.]*\)%$/\1/p')
    min=${PARITY_MIN:-97}
    if ! python3 -c "import sys; sys.exit(0 if float('$pct') >= float('$min') else 1)"; then
        echo "$out"
        echo "scripts/test.sh: parity $pct% is below $min%" >&2
        exit 1
    fi
else
    step "classifier parity skipped: $parity or $corpus not found"
fi

step "all checks passed"
