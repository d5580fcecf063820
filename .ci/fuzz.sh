#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and smoke-runs each for a bounded time,
# seeded at run time from tests/vectors/ (no corpus is committed).
#
#   bash .ci/fuzz.sh                      # all targets, 15 s each
#   R2SEAL_FUZZ_SECONDS=300 bash .ci/fuzz.sh open_file header_parse
#
# Caches (cargo-fuzz itself, the build, the growing corpora) live under
# ${R2SEAL_CACHE:-$HOME/.cache/r2seal-ci}. The toolchain is stable: cargo-fuzz's
# nightly-only flags (-Zsanitizer, -Cpasses=sancov) are enabled with
# RUSTC_BOOTSTRAP=1. A crash fails the script after all targets ran; its input is
# printed (base64) and kept under fuzz/artifacts/<target>/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${R2SEAL_CACHE:-$HOME/.cache/r2seal-ci}"
seconds="${R2SEAL_FUZZ_SECONDS:-15}"
# shellcheck source=.ci/cache.sh
source "$root/.ci/cache.sh"
bound_cache "$cache/fuzz-target" "${R2SEAL_FUZZ_CACHE_MAX_GIB:-8}"
export CARGO_TARGET_DIR="$cache/fuzz-target"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
export RUSTC_BOOTSTRAP=1

tools="$cache/tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
    echo "== installing cargo-fuzz into $tools"
    cargo install cargo-fuzz --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH"

cd "$root"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
[ "${#targets[@]}" -gt 0 ] || { echo "no fuzz targets found" >&2; exit 1; }

echo "== building ${#targets[@]} fuzz targets"
if [ "$#" -gt 0 ]; then
    for t in "${targets[@]}"; do cargo fuzz build "$t"; done
else
    cargo fuzz build
fi

# --- Seeds from tests/vectors (regenerated every run) ------------------------------
seeds="$cache/fuzz-seeds"
rm -rf "$seeds"
for t in "${targets[@]}"; do mkdir -p "$seeds/$t" "$cache/fuzz-corpus/$t"; done
vectors="$root/tests/vectors"
# body <vector>: the bytes after the first empty line.
body() { perl -0777 -ne 'print $1 if /\A.*?\n\n(.*)\z/s' "$1"; }
field() { perl -ne "print \"\$1\\n\" if /^$2: (.*)\$/; last if /^\$/" "$1"; }
seed() { [ -d "$seeds/$1" ] && cat > "$seeds/$1/$2" || cat > /dev/null; }
n=0
for v in "$vectors"/*; do
    name="$(basename "$v")"
    [ -f "$v" ] || continue # names/ is seeded below
    [ "$name" = README.md ] && continue
    n=$((n + 1))
    seed testkit_vector "$name" < "$v"
    form="$(field "$v" form)"
    case "$form" in
        file)
            body "$v" | seed header_parse "$name"
            body "$v" | seed open_file "$name"
            ;;
        metadata)
            field "$v" header | tr -d '\n' | seed metadata_parse "$name"
            ;;
        protected)
            body "$v" | seed passphrase_unprotect "$name"
            body "$v" | seed identity_file "$name"
            body "$v" | seed keyring "$name"
            ;;
    esac
    if [ "$form" != protected ]; then
        { echo "# identities of $name"; field "$v" identity; } | seed identity_file "$name"
    fi
done
[ "$n" -gt 0 ] || { echo "tests/vectors holds no vectors to seed from" >&2; exit 1; }
for v in "$vectors"/names/*; do
    field "$v" stored | tr -d '\n' | seed names_decrypt "$(basename "$v")"
done
seed descriptor_parse sample <<'EOF'
r2seal-descriptor/v1
{"form":"metadata","names":"mpKBz7cPQvk","default":["AQEBAQEBAQE","AgICAgICAgI"],"policies":[{"prefix":"archive/","keys":["AwMDAwMDAwM"]}]}
mac h0uBfGUiRWE x+/gGDt43cuMYE92WRzZ1+9OkVSFzBMRTz2/9K66D5c
EOF
sym="$(perl -ne 'if (/^identity: (R2SEAL-SYM-KEY-1\S+)/) { print $1; exit }' "$vectors"/*_*)"
x25519="$(perl -ne 'if (/^identity: (AGE-SECRET-KEY-1\S+)/) { print $1; exit }' "$vectors"/*_*)"
seed recipients_file plain <<'EOF'
# recipients of tests/vectors
age162qfk6n5tkkx7aur4pyxq9pphmuqlkg6yes0px436uq34wv0q9yqr4v876

age1jnelsd64wk0hknvrc0mrhuqhhf25fkyg5ptganrms3v6ech7lylqldc0vd
EOF
seed keyring sample <<EOF
version = 1
default = ["main", "recovery"]

[[key]]
name = "main"
kind = "sym"
secret = "$sym"
created = "2026-11-25T10:00:00Z"
status = "active"

[[key]]
name = "laptop"
kind = "x25519"
secret = "$x25519"
created = "2026-11-25T10:00:00Z"
status = "retired"

[[key]]
name = "recovery"
kind = "recipient"
recipient = "age1jnelsd64wk0hknvrc0mrhuqhhf25fkyg5ptganrms3v6ech7lylqldc0vd"
recovery = true
status = "active"

[[policy]]
prefix = "archive/"
keys = ["recovery"]
EOF
printf '%s' 'agent-007/sessions/2026-11-27.jsonl' | seed export_inputs key
printf '%s' '1764201600.123456789' | seed export_inputs mtime
printf '%s' '2/4' | seed export_inputs shard
printf '%s' 'bytes 1048576-2097151/10485760' | seed s3_responses range
printf '%s' '1048576-2097151' | seed byte_range inclusive
printf '%s' '-65536' | seed byte_range suffix
seed s3_responses error <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold &amp; so</Message><Resource>/b/k</Resource></Error>
EOF
printf '\x01\x05\x00\x00\x00\x00\x00\x00\x00\x02\x10\x27\x00\x00\x00\x00\x00\x00' | seed range_plan parts
printf '\x00\x02\x50\x00\x01\x00\x00\x00\x00\x00\x02\x10\x00\x00\x00\x00\x00\x00\x00' | seed range_plan single

# --- Smoke runs ----------------------------------------------------------------
failed=()
for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${seconds}s"
    mkdir -p "$root/fuzz/artifacts/$t"
    log="$cache/fuzz-$t.log"
    if cargo fuzz run "$t" "$cache/fuzz-corpus/$t" "$seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)' "$log" | sed "s/^/   $t: /" || true
    else
        failed+=("$t")
        echo "!! $t FAILED; last lines of its log:"
        tail -n 40 "$log"
        for crash in "$root/fuzz/artifacts/$t"/*; do
            [ -f "$crash" ] || continue
            echo "!! input $(basename "$crash") (base64): $(base64 -w0 < "$crash")"
        done
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz smoke run: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}"
    exit 1
fi
echo "fuzz smoke run: all ${#targets[@]} targets ran ${seconds}s without a finding"
