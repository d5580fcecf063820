#!/usr/bin/env bash
# Sealed bucket transfers vs the same store unsealed vs rclone crypt, all against the same local
# Garage (started by .ci/services.sh unless R2SEAL_TEST_S3_ENDPOINT is already set).
#
#   bash bench/bucket.sh            # writes bench/out/bucket.md and prints it
#
# - r2seal: the SealedBucket library (examples/bucket_bench.rs, mode "sealed"), plus the
#   r2seal CLI for the 1 GiB peak-RSS rows.
# - plain: the same store client (r2seal::store::s3, its direct GET/HEAD/PUT included), no sealing, same
#   part size (16 MiB) and concurrency (4 parts, 16 objects in flight).
# - rclone crypt: Debian's rclone, a crypt remote over an s3 remote on the same bucket,
#   --transfers 16, default chunk settings.
# One run per figure on a shared 2-core machine: read ratios, not absolutes.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

cargo build --release -j 2 --example bucket_bench --bin r2seal >&2
BENCH="$CARGO_TARGET_DIR/release/examples/bucket_bench"
R2SEAL="$CARGO_TARGET_DIR/release/r2seal"
BUCKET="$R2SEAL_TEST_S3_BUCKET"
RUN="bench-$$-$(date +%s)"

MIB=$((1024 * 1024))
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$2'])" "$1"; }

bench() { # bench MODE OP DIR COUNT SIZE JOBS -> seconds (and the JSON on stderr)
    local out
    out="$("$BENCH" "$1" "$2" "s3://$BUCKET/$RUN/$1-$3" "$WORK/$3" "$4" "$5" "$6")"
    echo "$out" >&2
    field "$out" seconds
}

# ---- rclone crypt over the same bucket ----
bench_rclone_conf "$WORK/rclone.conf" "$BUCKET/$RUN/rclone"

rclone_run() { # rclone_run put|get DIR TRANSFERS -> seconds
    local t0 t1
    t0=$(now)
    if [ "$1" = put ]; then
        rc copy --transfers "$3" "$WORK/$2" "crypt:$2"
    else
        rc copy --transfers "$3" "crypt:$2" "$WORK/rclone-back-$2"
    fi
    t1=$(now)
    secs "$t0" "$t1"
}

declare -A T
for dir in large small; do mkdir -p "$WORK/$dir"; done

echo "== 256 MiB, one object" >&2
T[sealed_large_put]=$(bench sealed put large 1 $((256 * MIB)) 1)
T[plain_large_put]=$(bench plain put large 1 $((256 * MIB)) 1)
T[sealed_large_get]=$(bench sealed get large 1 $((256 * MIB)) 1)
T[plain_large_get]=$(bench plain get large 1 $((256 * MIB)) 1)
rm -f "$WORK/large/bench.key"
T[rclone_large_put]=$(rclone_run put large 4)
T[rclone_large_get]=$(rclone_run get large 4)

echo "== 2,000 x 4 KiB" >&2
T[sealed_small_put]=$(bench sealed put small 2000 4096 16)
T[plain_small_put]=$(bench plain put small 2000 4096 16)
T[sealed_small_get]=$(bench sealed get small 2000 4096 16)
T[plain_small_get]=$(bench plain get small 2000 4096 16)
rm -f "$WORK/small/bench.key"
T[rclone_small_put]=$(rclone_run put small 16)
T[rclone_small_get]=$(rclone_run get small 16)

echo "== 1 GiB peak RSS" >&2
mkdir -p "$WORK/huge"
"$BENCH" sealed put "s3://$BUCKET/$RUN/rss" "$WORK/huge" 1 $((1024 * MIB)) 1 >"$WORK/rss-lib-put.json"
"$BENCH" sealed get "s3://$BUCKET/$RUN/rss" "$WORK/huge" 1 $((1024 * MIB)) 1 >"$WORK/rss-lib-get.json"
"$R2SEAL" keygen -o "$WORK/key.txt" 2>/dev/null >/dev/null
RECIPIENT="$("$R2SEAL" recipient -i "$WORK/key.txt")"
rss() { # rss CMD... -> "seconds peak_kib"
    /usr/bin/time -f '%e %M' -o "$WORK/time.txt" "$@" >/dev/null
    cat "$WORK/time.txt"
}
read -r CLI_PUT_S CLI_PUT_KB < <(rss "$R2SEAL" put -r "$RECIPIENT" "$WORK/huge/obj-0" "s3://$BUCKET/$RUN/cli/huge.bin")
read -r CLI_GET_S CLI_GET_KB < <(rss "$R2SEAL" get -i "$WORK/key.txt" "s3://$BUCKET/$RUN/cli/huge.bin" "$WORK/huge.out")
cmp "$WORK/huge/obj-0" "$WORK/huge.out"
rm -f "$WORK/huge.out"

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
mibs() { python3 -c "print(f'{$1 / $2:.0f}')"; }
ops() { python3 -c "print(f'{$1 / $2:.0f}')"; }

{
    echo "# Sealed bucket benchmark ($(date -u +%Y-%m-%d), $(nproc) cores, local Garage)"
    echo
    echo "| workload | r2seal | plain (same store, unsealed) | rclone crypt | r2seal / plain time | rclone / r2seal time |"
    echo "|---|---|---|---|---|---|"
    for w in large_put large_get; do
        s=${T[sealed_$w]} p=${T[plain_$w]} r=${T[rclone_$w]}
        echo "| 256 MiB ${w#large_} | ${s} s ($(mibs 256 "$s") MiB/s) | ${p} s ($(mibs 256 "$p") MiB/s) | ${r} s ($(mibs 256 "$r") MiB/s) | $(ratio "$s" "$p") | $(ratio "$r" "$s") |"
    done
    for w in small_put small_get; do
        s=${T[sealed_$w]} p=${T[plain_$w]} r=${T[rclone_$w]}
        echo "| 2,000 × 4 KiB ${w#small_} | ${s} s ($(ops 2000 "$s") obj/s) | ${p} s ($(ops 2000 "$p") obj/s) | ${r} s ($(ops 2000 "$r") obj/s) | $(ratio "$s" "$p") | $(ratio "$r" "$s") |"
    done
    echo
    echo "Peak RSS for 1 GiB (16 MiB parts, 4 in flight):"
    echo
    echo "| 1 GiB | time | peak RSS |"
    echo "|---|---|---|"
    echo "| library put | $(field "$(cat "$WORK/rss-lib-put.json")" seconds) s | $(( $(field "$(cat "$WORK/rss-lib-put.json")" peak_rss_kib) / 1024 )) MiB |"
    echo "| library get | $(field "$(cat "$WORK/rss-lib-get.json")" seconds) s | $(( $(field "$(cat "$WORK/rss-lib-get.json")" peak_rss_kib) / 1024 )) MiB |"
    echo "| \`r2seal put\` (CLI) | ${CLI_PUT_S} s | $((CLI_PUT_KB / 1024)) MiB |"
    echo "| \`r2seal get\` (CLI, to a file) | ${CLI_GET_S} s | $((CLI_GET_KB / 1024)) MiB |"
} | { mkdir -p bench/out; tee bench/out/bucket.md; }
