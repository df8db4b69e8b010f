#!/usr/bin/env bash
# The dashboard and alert rules of dashboards/:
#  1. promtool checks the rules and runs their unit tests (alerts.test.yml);
#  2. the dashboard is validated against Grafana's Dashboard type (@grafana/schema, pinned in
#     dashboards/package-lock.json);
#  3. end to end: a real Prometheus (loopback, temp dir, 1 s scrape and evaluation) scrapes
#     `cargo run --example scenario` (a primary that refuses connections); every PromQL
#     expression of the dashboard must return data and the headline alert must fire. The rules
#     are loaded from alerts.yml with every `for:` shortened to 5s (sed), so it fires in seconds.
# DASHBOARD_E2E_DEADLINE (seconds, default 60) bounds the polling.
# Needs promtool/prometheus (Debian package prometheus), node and npm, python3. Called by
# scripts/test.sh; runs alone too.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "promtool check rules / test rules (dashboards/alerts.yml)"
promtool check rules dashboards/alerts.yml
(cd dashboards && promtool test rules alerts.test.yml)

step "dashboard against @grafana/schema's Dashboard type"
if [ ! -f dashboards/node_modules/.package-lock.json ] ||
    ! cmp -s dashboards/package-lock.json dashboards/node_modules/.lock-copy; then
    (cd dashboards && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error &&
        cp package-lock.json node_modules/.lock-copy)
fi
node dashboards/validate.mjs dashboards/llm-failover.json

step "end to end: Prometheus scraping the scenario example, dashboard queries and the headline alert"
cargo build --quiet --example scenario
tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
app_port=$(free_port)
prom_port=$(free_port)

target/debug/examples/scenario "127.0.0.1:$app_port" >"$tmp/scenario.out" 2>"$tmp/scenario.err" &
pids+=($!)
deadline=$((SECONDS + 20))
until grep -qs '^ready$' "$tmp/scenario.out"; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "${pids[0]}" 2>/dev/null; then
        cat "$tmp/scenario.err" >&2
        echo "scripts/dashboards.sh: the scenario example did not start" >&2
        exit 1
    fi
    sleep 0.2
done

sed -E 's/^([[:space:]]*for:[[:space:]]*).*/\15s/' dashboards/alerts.yml >"$tmp/alerts.yml"
cat >"$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $tmp/alerts.yml
scrape_configs:
  - job_name: llm-failover
    static_configs:
      - targets: ["127.0.0.1:$app_port"]
YAML
promtool check config "$tmp/prometheus.yml" >/dev/null
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
deadline=$((SECONDS + 20))
until curl -fsS "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "${pids[1]}" 2>/dev/null; then
        cat "$tmp/prometheus.log" >&2
        echo "scripts/dashboards.sh: prometheus did not become ready" >&2
        exit 1
    fi
    sleep 0.2
done

if ! python3 scripts/dashboard_e2e.py "http://127.0.0.1:$prom_port" dashboards/llm-failover.json \
    LLMFailoverPrimaryConnectionRefused "${DASHBOARD_E2E_DEADLINE:-60}"; then
    tail -n 20 "$tmp/prometheus.log" >&2
    exit 1
fi
