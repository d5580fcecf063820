#!/usr/bin/env bash
# rclone through `r2seal gateway` vs rclone straight to the same local Garage (started by
# .ci/services.sh unless R2SEAL_TEST_S3_ENDPOINT is already set).
#
#   bash bench/gateway.sh [ROUNDS]     # writes bench/out/gateway.md and prints it
#
# Workloads: one 256 MiB file, and 2,000 small files (a state tree: 200 dirs × 10 files of
# 1-8 KiB), each copied up (`rclone copy`, to a fresh prefix) and back down; the small
# tree is also synced again unchanged (`rclone sync`, a no-op). A second tree of the same
# sizes is uploaded with `--s3-no-head` both ways (rclone then trusts the PUT's answer,
# whose ETag the gateway makes the plaintext MD5, instead of a HEAD per file). Direct and
# gateway runs alternate within each round (which goes first alternates too); the table
# gives medians over ROUNDS (default 3) and the ratio direct time ÷ gateway time
# (throughput through the gateway relative to direct: 1.0 = as fast). Same rclone
# settings both ways (defaults: --transfers 4, single-part up to 200 MiB).
set -euo pipefail
ROUNDS="${1:-3}"
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

command -v rclone >/dev/null || { echo "rclone missing: apt-get install rclone" >&2; exit 1; }
unset AWS_CA_BUNDLE

# R2SEAL_BIN: an already built release binary (skips the build).
[ -n "${R2SEAL_BIN:-}" ] || cargo build --release -j 2 --bin r2seal >&2
R2SEAL="${R2SEAL_BIN:-$CARGO_TARGET_DIR/release/r2seal}"
BUCKET="$R2SEAL_TEST_S3_BUCKET"
RUN="gwbench-$$-$(date +%s)"

# ---- the gateway ----
"$R2SEAL" keygen -o "$WORK/key.txt" 2>/dev/null
export R2SEAL_GATEWAY_ACCESS_KEY_ID=bench R2SEAL_GATEWAY_SECRET_ACCESS_KEY="bench-$RUN"
"$R2SEAL" gateway -i "$WORK/key.txt" --listen 127.0.0.1:0 \
    --upstream "$R2SEAL_TEST_S3_ENDPOINT" 2>"$WORK/gateway.log" &
GW_PID=$!
bench_at_exit "kill $GW_PID 2>/dev/null"
for _ in $(seq 50); do grep -q listening "$WORK/gateway.log" && break; sleep 0.1; done
GW_URL="$(grep -o 'http://127.0.0.1:[0-9]*' "$WORK/gateway.log" | head -1)"

# `garage:` is Garage directly, `gateway:` the gateway; same rclone settings both ways.
bench_rclone_conf --s3 "list_version = 2" "$WORK/rclone.conf" "$BUCKET/$RUN/crypt" \
    gateway "$GW_URL" "$R2SEAL_GATEWAY_ACCESS_KEY_ID" "$R2SEAL_GATEWAY_SECRET_ACCESS_KEY"

# ---- data ----
# Fresh bytes every round, the same for both remotes within it: Garage stores blocks by
# their hash, so uploading a file it already holds skips the block writes. Sealed uploads
# are always new ciphertext, and a repeated direct upload would have had that discount
# (measured: 256 MiB direct, the same file again cost Garage 2.2-2.6 s, a fresh one
# 2.6-3.2 s). A mirror uploads files because they changed.
fresh_data() {
    rm -rf "$WORK/big" "$WORK/small" "$WORK/nohead"
    mkdir -p "$WORK/big" "$WORK/small" "$WORK/nohead"
    head -c $((256 * 1024 * 1024)) /dev/urandom >"$WORK/big/file.bin"
    python3 - "$WORK/small" "$WORK/nohead" <<'PY'
import os, random, sys
for root in sys.argv[1:]:
    rnd = random.Random(7)  # the same sizes in both trees, other bytes
    for d in range(200):
        path = os.path.join(root, f"agent-{d:03}", "sessions")
        os.makedirs(path)
        for f in range(10):
            with open(os.path.join(path, f"{f:02}.jsonl"), "wb") as fh:
                fh.write(os.urandom(rnd.randint(1024, 8192)))
PY
}

declare -A T
record() { T[$1]="${T[$1]:-} $2"; }
measured() { # measured KEY CMD...: times CMD, with the CPU of rclone, the gateway and Garage
    local gw0
    gw0="$(proc_cpu "$GW_PID")"
    bench_measure "${@:2}"
    record "$1" "$WALL"
    record "$1-cpu" "$CPU"
    record "$1-server" "$SERVER_CPU"
    record "$1-gateway" "$(secs "$gw0" "$(proc_cpu "$GW_PID")")"
}
one() { # one REMOTE WORKLOAD ROUND
    local remote="$1" w="$2" r="$3" dst="$BUCKET/$RUN/$1-$2-$3"
    if [ "$w" = nohead ]; then
        measured "$remote-$w-up" rc copy --s3-no-head "$WORK/$w" "$remote:$dst"
        return
    fi
    measured "$remote-$w-up" rc copy "$WORK/$w" "$remote:$dst"
    # The steady state of a state mirror: `rclone sync` again with nothing changed
    # (listings, and a HEAD per object for its mtime).
    [ "$w" = small ] && measured "$remote-$w-sync" rc sync "$WORK/$w" "$remote:$dst"
    measured "$remote-$w-down" rc copy "$remote:$dst" "$WORK/down-$remote-$w-$r"
    rm -rf "$WORK/down-$remote-$w-$r"
}
for r in $(seq "$ROUNDS"); do
    fresh_data
    for w in big small nohead; do
        if [ $((r % 2)) -eq 1 ]; then order="garage gateway"; else order="gateway garage"; fi
        for remote in $order; do one "$remote" "$w" "$r"; echo "round $r $w $remote done" >&2; done
    done
done
# Correctness of what was measured: the last gateway round reads back what was written.
rc check "$WORK/small" "gateway:$BUCKET/$RUN/gateway-small-$ROUNDS" >&2
rc check "$WORK/nohead" "gateway:$BUCKET/$RUN/gateway-nohead-$ROUNDS" >&2

dirs() { case "$1" in big) echo up down ;; small) echo up down sync ;; nohead) echo up ;; esac; }
label() { # label WORKLOAD DIR
    case "$1" in
        big) echo "256 MiB file, $2" ;;
        small) echo "2,000 files of 1-8 KiB, $([ "$2" = sync ] && echo "no-op sync" || echo "$2")" ;;
        nohead) echo "2,000 files of 1-8 KiB, up with \`--s3-no-head\` both ways" ;;
    esac
}
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}')" $1; }
mkdir -p bench/out
{
    echo "| workload | direct | through the gateway | direct ÷ gateway time | runs (direct; gateway) |"
    echo "|---|---|---|---|---|"
    for w in big small nohead; do
        for dir in $(dirs "$w"); do
            d="$(median "${T[garage-$w-$dir]}")"; g="$(median "${T[gateway-$w-$dir]}")"
            echo "| $(label "$w" "$dir") | ${d} s | ${g} s | **$(python3 -c "print(f'{$d / $g:.2f}')")×** |${T[garage-$w-$dir]};${T[gateway-$w-$dir]} |"
        done
    done
    echo
    echo "CPU seconds (medians) of rclone + the gateway + Garage, which share the machine's cores:"
    echo
    echo "| workload | direct | through the gateway |"
    echo "|---|---|---|"
    for w in big small nohead; do
        for dir in $(dirs "$w"); do
            k="$w-$dir"
            echo "| $(label "$w" "$dir") | $(median "${T[garage-$k-cpu]}") + $(median "${T[garage-$k-server]}") | $(median "${T[gateway-$k-cpu]}") + $(median "${T[gateway-$k-gateway]}") + $(median "${T[gateway-$k-server]}") |"
        done
    done
    echo
    echo "Gateway peak RSS over the whole run: $(awk '/VmHWM/ {printf "%.0f MiB", $2 / 1024}' /proc/$GW_PID/status)."
    echo "Medians of $ROUNDS interleaved rounds ($BENCH_SETUP); rclone $(rclone version | head -1 | awk '{print $2}'), Garage on loopback."
} | tee bench/out/gateway.md
