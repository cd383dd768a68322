#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what it needs, then
# checks formatting and lints, runs every test, and runs the demo acceptance.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "toolchain components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test"
cargo test

step "demo acceptance: vigil demo --events 20000 --seed 7"
# The binary `cargo test` just built: `cargo run` would resolve features
# without dev-dependencies and rebuild DataFusion from scratch.
target="${CARGO_TARGET_DIR:-target}"
summary="$target/demo-summary.json"
"$target/debug/vigil" demo --events 20000 --seed 7 --summary-json "$summary" --quiet
python3 - "$summary" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
assert s["missing"] == s["unexpected"] == s["duplicates"] == 0, s
for c in ("CM-01", "SOD-02", "SEC-01"):
    assert s["per_control"][c]["expected"] > 0, (c, s)
print("demo summary ok:", {k: s[k] for k in ("events", "expected", "found", "elapsed_s")})
PY
