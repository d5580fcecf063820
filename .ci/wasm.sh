#!/usr/bin/env bash
# The Worker build (wasm/): installs what it needs into the cache when missing
# (wasm32 target, wasm-bindgen-cli at the exact version wasm/Cargo.lock pins, npm
# packages from wasm/package-lock.json), builds wasm/pkg, builds the native CLI for the
# cross-implementation tests, then runs `npm --prefix wasm test` (workerd via miniflare).
# Works from nothing; fast when cached. Called by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

export R2SEAL_CACHE="${R2SEAL_CACHE:-$HOME/.cache/r2seal-ci}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$R2SEAL_CACHE/target}"
export CARGO_TERM_COLOR=never
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
mkdir -p "$R2SEAL_CACHE/tools/bin"
export PATH="$R2SEAL_CACHE/tools/bin:$PATH"

step() { printf '\n=== wasm: %s (%ss)\n' "$*" "$SECONDS"; }

step "toolchain"
rustup target add wasm32-unknown-unknown >/dev/null
rustup component add rustfmt clippy >/dev/null 2>&1 || true
node --version
npm --version

step "wasm-bindgen-cli"
version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' wasm/Cargo.lock)"
[ -n "$version" ] || { echo "wasm-bindgen is not in wasm/Cargo.lock" >&2; exit 1; }
if [ "$("$R2SEAL_CACHE/tools/bin/wasm-bindgen" --version 2>/dev/null || true)" != "wasm-bindgen $version" ]; then
  cargo install wasm-bindgen-cli --version "$version" --root "$R2SEAL_CACHE/tools" -j "$CARGO_BUILD_JOBS"
fi
"$R2SEAL_CACHE/tools/bin/wasm-bindgen" --version

step "npm packages"
# `npm ci` from the committed lock; skipped when node_modules already matches it.
lock_hash="$(sha256sum wasm/package-lock.json | cut -d' ' -f1)"
stamp="wasm/node_modules/.r2seal-lock-sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  npm --prefix wasm ci --no-audit --no-fund
  echo "$lock_hash" > "$stamp"
fi

step "fmt + clippy (wasm/)"
cargo fmt --manifest-path wasm/Cargo.toml -- --check
cargo clippy --locked --manifest-path wasm/Cargo.toml --all-targets -- -D warnings
cargo clippy --locked --manifest-path wasm/Cargo.toml --lib --target wasm32-unknown-unknown -- -D warnings
cargo test --locked --manifest-path wasm/Cargo.toml

step "build wasm/pkg"
node wasm/scripts/build.mjs

step "native CLI (cross-implementation tests)"
cargo build --locked --bin r2seal
export R2SEAL_BIN="$CARGO_TARGET_DIR/debug/r2seal"

step "tests in workerd"
npm --prefix wasm test

step "done"
