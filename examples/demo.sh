#!/usr/bin/env bash
# The main job on a local default, no R2 account needed: seal an agent's state
# directory (session transcript, bot credentials, config, pairing code) into a
# file:// bucket, prove the bucket holds only ciphertext, read it back, and show
# what tampering, a moved object and a wrong key look like.
#
#   bash examples/demo.sh            # builds r2seal (release) if needed
#   R2SEAL_BIN=path/to/r2seal bash examples/demo.sh   # uses that binary (CI: the test build)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${R2SEAL_BIN:-}" ]; then
  r2seal=$(realpath "$R2SEAL_BIN")
else
  command -v cargo >/dev/null || { echo "demo: needs Rust's cargo (https://rustup.rs)" >&2; exit 1; }
  cargo build --release --quiet --bin r2seal
  target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  r2seal="$target_dir/release/r2seal"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if [ -t 1 ]; then say() { printf '\n\033[1m%s\033[0m\n' "$*"; }; else say() { printf '\n== %s\n' "$*"; }; fi
# Runs a command that must fail (its error message is the point); the demo stops if it works.
must_fail() { if "$@"; then echo "demo: expected this to fail: $*" >&2; exit 1; fi; }

say "1. An agent's state, in plaintext"
mkdir -p state/sessions state/credentials state/devices
printf '{"role":"user","content":"book a table for two"}\n{"role":"assistant","content":"done: 19:30"}\n' > state/sessions/2026-11-25.jsonl
printf '{"telegram_bot_token":"7312:AAH-demo-token","oauth_refresh":"1//demo-refresh"}\n' > state/credentials/bots.json
printf 'gateway_token = "gw_live_demo"\n' > state/config.toml
printf '482-915\n' > state/devices/pairing-code.txt
find state -type f | sort

say "2. Keys: a symmetric key for the agent, an offline recovery key"
export R2SEAL_KEYRING="$work/keyring.toml"
"$r2seal" key add agent --sym
"$r2seal" keygen -o recovery.txt > recovery.pub
"$r2seal" key add recovery --recipient "$(cat recovery.pub)" --recovery
"$r2seal" key default agent recovery
"$r2seal" key policy archive/ recovery     # the agent can write archive/, never read it
"$r2seal" key list

say "3. Seal the whole state directory into a bucket (file:// here; s3:// and r2:// alike)"
mkdir -p bucket
"$r2seal" put --recursive state "file://$work/bucket/"
"$r2seal" ls --recursive --long "file://$work/bucket/"

say "4. The bucket holds only ciphertext"
if grep -rIl -e 'demo-token' -e 'book a table' -e '482-915' -e 'gw_live' bucket; then
  echo "demo: plaintext found in the bucket" >&2; exit 1
fi
echo "no plaintext found in bucket/ (grep for tokens, transcript and pairing code came back empty)"
"$r2seal" head "file://$work/bucket/credentials/bots.json"

say "5. Read everything back and compare"
"$r2seal" get --recursive "file://$work/bucket/" restored
diff -r state restored && echo "all objects open to their original bytes"
"$r2seal" cat --range 0-44 "file://$work/bucket/sessions/2026-11-25.jsonl"; echo

say "6. What goes wrong, goes wrong loudly"
# Someone with bucket access moves config.toml's object over the pairing code.
mv bucket/config.toml bucket/devices/pairing-code.txt
mv bucket/.r2seal-meta/obj/config.toml.json bucket/.r2seal-meta/obj/devices/pairing-code.txt.json
must_fail "$r2seal" cat "file://$work/bucket/devices/pairing-code.txt"
printf 'X' | dd of=bucket/sessions/2026-11-25.jsonl bs=1 seek=20 conv=notrunc status=none   # a flipped byte
must_fail "$r2seal" get "file://$work/bucket/sessions/2026-11-25.jsonl" tampered.jsonl
[ ! -e tampered.jsonl ] || { echo "demo: a partial plaintext file was left behind" >&2; exit 1; }
echo "(no partial plaintext file was left behind)"
"$r2seal" keygen -o stranger.txt >/dev/null
must_fail "$r2seal" cat -i stranger.txt "file://$work/bucket/credentials/bots.json"

say "7. The same format works on plain files: an age v1 file the recovery key opens with age"
"$r2seal" seal --name notes.txt -o notes.age state/config.toml
if command -v age >/dev/null; then
  age -d -i recovery.txt notes.age
else
  echo "(install age to see this: apt-get install age)"
fi
