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
