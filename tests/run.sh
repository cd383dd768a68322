#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then
# checks formatting and lints, runs every test, and runs the demo acceptance.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain components"
# Only when missing: rustup's server may be out of reach (then both checks
# are skipped below, saying so, rather than failing the suite).
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    timeout 120 rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi
have_fmt=1; cargo fmt --version >/dev/null 2>&1 || have_fmt=0
have_clippy=1; cargo clippy --version >/dev/null 2>&1 || have_clippy=0

apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

step "OpenSSL: librdkafka is built with TLS and SCRAM; the security drill makes its CA with openssl"
if ! command -v openssl >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1 \
    || ! pkg-config --exists openssl 2>/dev/null; then
    apt_install openssl libssl-dev pkg-config
fi

step "Apache Kafka: the broker the process-level tests, drills and benchmarks run against"
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
    apt_install openjdk-17-jre-headless maven
fi
tests/kafka/fetch.sh

step "Prometheus and Alertmanager (promtool, amtool): the observability tests run the real ones"
if ! command -v promtool >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1 \
    || ! command -v prometheus-alertmanager >/dev/null 2>&1; then
    apt_install prometheus prometheus-alertmanager
fi

step "Chromium: the report test renders the HTML report headless"
if ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium
fi

step "PyYAML: tests/deploy_check.py reads deploy/'s YAML"
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install --quiet pyyaml

step "cargo fmt --check"
if [ "$have_fmt" = 1 ]; then
    cargo fmt --all -- --check
else
    echo "rustfmt is not part of this toolchain and cannot be fetched here: formatting not checked"
fi

step "cargo clippy -D warnings"
if [ "$have_clippy" = 1 ]; then
    cargo clippy --all-targets -- -D warnings
else
    echo "clippy is not part of this toolchain and cannot be fetched here: lints not checked"
fi

step "cargo test"
cargo test

target="${CARGO_TARGET_DIR:-target}"
# The binary `cargo test` just built: `cargo run` would resolve features
# without dev-dependencies and rebuild DataFusion from scratch.
vigil="$target/debug/vigil"

step "control cases and query check: vigil test, vigil check"
"$vigil" test | tail -n 1
"$vigil" check --config deploy/vigil.toml

step "demo acceptance: vigil demo --events 50000 --seed 11"
summary="$target/demo-summary.json"
"$vigil" demo --events 50000 --seed 11 --summary-json "$summary" --quiet
python3 - "$summary" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["missing"] == s["unexpected"] == s["duplicates"] == 0, s
controls = ["CM-01", "CM-02", "CM-03", "CM-04", "SOD-01", "SOD-02", "TST-01", "SEC-01", "INT-01",
            "AC-01", "AC-02", "AC-03", "AUD-01"]
for c in controls:
    assert s["per_control"][c]["expected"] > 0, (c, s)
    assert s["per_control"][c]["found"] == s["per_control"][c]["expected"], (c, s)
print("demo summary ok:", {k: s[k] for k in ("events", "expected", "found", "elapsed_s")})
PY
