#!/usr/bin/env bash
# `r2seal migrate --to` vs `rclone copy` into an rclone crypt remote: both read the same
# plain objects from a local Garage and write encrypted copies back into it, at the same
# concurrency. (Started by .ci/services.sh unless R2SEAL_TEST_S3_ENDPOINT is set.)
#
#   bash bench/jobs.sh              # writes bench/out/jobs.md and prints it
#   ROUNDS=3 SMALL=10000 LARGE=20 bash bench/jobs.sh
#   WORKLOADS=large ROUNDS=5 bash bench/jobs.sh   # one workload only
#
# Each round also seals a server-side copy of the source in place (`migrate URL`), timed
# on its own. Workloads: SMALL × 4 KiB objects (--jobs 16 / --transfers 16) and LARGE × 64 MiB
# objects (--jobs 4 / --transfers 4; both tools with their defaults: one PUT per object,
# under r2seal's 200 MiB multipart threshold and rclone's 200 MiB upload cutoff). The
# large workload also runs a baseline in the same rounds: r2seal with
# `--multipart-threshold 16` (16 MiB parts, 4 in flight per object; the default before
# 2026-11-26). Runs alternate their order each round, ROUNDS times each, each once Garage
# is idle; the tables give medians. Each run writes to a fresh destination.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS="${ROUNDS:-3}"
SMALL="${SMALL:-10000}"
LARGE="${LARGE:-20}"
WORKLOADS="${WORKLOADS:-small large}"
case " $WORKLOADS " in *" small "*) ;; *) SMALL=0 ;; esac
case " $WORKLOADS " in *" large "*) ;; *) LARGE=0 ;; esac

# R2SEAL_BIN: a release binary built already (skips the build).
if [ -z "${R2SEAL_BIN:-}" ]; then
    cargo build --release -j 2 --bin r2seal >&2
fi
R2SEAL="${R2SEAL_BIN:-$CARGO_TARGET_DIR/release/r2seal}"
BUCKET="$R2SEAL_TEST_S3_BUCKET"
RUN="bench-jobs-$$-$(date +%s)"

# Every copy a run writes stays until it ends (purged at exit): the source, then per
# round four copies of the large objects (r2seal, the multipart baseline, rclone, the
# in-place copy) and the in-place rewrite. Not purged between rounds: Garage deletes the
# blocks of purged objects 10 minutes later (its BLOCK_GC_DELAY), in the middle of
# whichever run is measured then, which `bench_settle` cannot see coming. A full disk
# stalled Garage mid-request once (5 rounds, 22 GiB).
need_mib=$(((1 + 5 * ROUNDS) * LARGE * 64 + 2 * ROUNDS * SMALL * 5 / 1024 + 1024))
if [ -n "${R2SEAL_SERVICES_DIR:-}" ]; then
    free_mib=$(df -Pm "$R2SEAL_SERVICES_DIR" | awk 'NR == 2 {print $4}')
    if [ "$free_mib" -lt "$need_mib" ]; then
        echo "bench: about $need_mib MiB of disk needed for Garage's data, $free_mib MiB free; lower ROUNDS or LARGE" >&2
        exit 1
    fi
fi
bench_rclone_conf "$WORK/rclone.conf" "$BUCKET/$RUN/rclone"
bench_at_exit "rc purge 'garage:$BUCKET/$RUN' 2>/dev/null"

"$R2SEAL" keygen -o "$WORK/key.txt" 2>/dev/null >/dev/null
RECIPIENT="$("$R2SEAL" recipient -i "$WORK/key.txt")"

echo "== planting $SMALL x 4 KiB and $LARGE x 64 MiB plain objects" >&2
mkdir -p "$WORK/small" "$WORK/large"
python3 - "$WORK/small" "$SMALL" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    sub = os.path.join(d, f"s{i % 100:02d}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"{i:05d}.json"), "wb") as f:
        f.write(os.urandom(4096))
PY
for i in $(seq 1 "$LARGE"); do head -c $((64 * 1024 * 1024)) /dev/urandom >"$WORK/large/obj-$i.bin"; done
rc copy --transfers 32 "$WORK/small" "garage:$BUCKET/$RUN/src-small"
rc copy --transfers 4 "$WORK/large" "garage:$BUCKET/$RUN/src-large"
rm -rf "$WORK/small" "$WORK/large"

r2seal_run() { # r2seal_run small|large JOBS ROUND
    "$R2SEAL" migrate --quiet --jobs "$2" -r "$RECIPIENT" \
        --to "s3://$BUCKET/$RUN/r2seal-$1-$3/" "s3://$BUCKET/$RUN/src-$1/"
}
rclone_run() { # rclone_run small|large TRANSFERS ROUND
    rc copy --transfers "$2" "garage:$BUCKET/$RUN/src-$1" "crypt:$1-$3"
}
parts_run() { # parts_run large JOBS ROUND: the baseline, multipart as before 2026-11-26
    "$R2SEAL" migrate --quiet --jobs "$2" -r "$RECIPIENT" --multipart-threshold 16 \
        --to "s3://$BUCKET/$RUN/parts-$1-$3/" "s3://$BUCKET/$RUN/src-$1/"
}
inplace_run() { # inplace_run small|large JOBS ROUND: seal a copy of the source where it is
    "$R2SEAL" migrate --quiet --jobs "$2" -r "$RECIPIENT" "s3://$BUCKET/$RUN/inplace-$1-$3/"
}

mkdir -p bench/out
declare -A T C S
for w in $WORKLOADS; do
    jobs=16
    [ "$w" = large ] && jobs=4
    for r in $(seq 1 "$ROUNDS"); do
        order="r2seal rclone"
        [ $((r % 2)) -eq 0 ] && order="rclone r2seal"
        # Large objects also run the multipart baseline (same run, same server state).
        [ "$w" = large ] && order="parts $order"
        [ "$w" = large ] && [ $((r % 2)) -eq 0 ] && order="${order#parts } parts"
        for tool in $order; do
            bench_measure "${tool}_run" "$w" "$jobs" "$r"
            T[${tool}_${w}_$r]=$WALL C[${tool}_${w}_$r]=$CPU S[${tool}_${w}_$r]=$SERVER_CPU
            echo "$tool $w round $r: $WALL s (CPU: $CPU s client, $SERVER_CPU s Garage)" >&2
        done
        # In place (no rclone equivalent): a server-side copy of the source, then sealed.
        rc copy --transfers 32 "garage:$BUCKET/$RUN/src-$w" "garage:$BUCKET/$RUN/inplace-$w-$r"
        bench_measure inplace_run "$w" "$jobs" "$r"
        T[inplace_${w}_$r]=$WALL C[inplace_${w}_$r]=$CPU S[inplace_${w}_$r]=$SERVER_CPU
        echo "r2seal in place $w round $r: $WALL s (CPU: $CPU s client, $SERVER_CPU s Garage)" >&2
    done
done

vals() { # vals ARRAY KEY: the rounds' values
    local -n a=$1
    local out=() r
    for r in $(seq 1 "$ROUNDS"); do out+=("${a[${2}_$r]:-nan}"); done # nan: not run
    echo "${out[@]}"
}
args=()
for k in r2seal_small rclone_small r2seal_large rclone_large; do args+=("$(vals T $k)"); done
for k in r2seal_small rclone_small r2seal_large rclone_large; do args+=("$(vals C $k)" "$(vals S $k)"); done
for k in inplace_small inplace_large parts_large; do args+=("$(vals T $k)" "$(vals C $k)" "$(vals S $k)"); done

python3 - "$BENCH_SETUP" "$SMALL" "$LARGE" "$ROUNDS" "$(nproc)" "${args[@]}" <<'PY' | tee bench/out/jobs.md
import datetime, math, statistics, sys
setup = sys.argv.pop(1)
small, large, rounds, cores = (int(x) for x in sys.argv[1:5])
runs = [[float(x) for x in a.split()] for a in sys.argv[5:9]]
cpu = [statistics.median(float(x) for x in a.split()) for a in sys.argv[9:17]]
print(f"# migrate vs rclone crypt ({datetime.date.today()}, {cores} cores, local Garage, "
      f"{rounds} interleaved rounds, medians; {setup})\n")
print("| workload | r2seal migrate --to | rclone copy to crypt | rclone / r2seal time | runs (r2seal; rclone) |")
print("|---|---|---|---|---|")
for label, work, unit, (a, b) in [
    (f"{small:,} x 4 KiB, 16 at once", small, "obj/s", runs[0:2]),
    (f"{large} x 64 MiB, 4 at once", large * 64, "MiB/s", runs[2:4]),
]:
    s, r = statistics.median(a), statistics.median(b)
    if math.isnan(s):
        continue
    print(f"| {label} | {s:.2f} s ({work / s:.0f} {unit}) | {r:.2f} s ({work / r:.0f} {unit}) "
          f"| **{r / s:.2f}x** | {' '.join(map(str, a))}; {' '.join(map(str, b))} |")
print("\nCPU seconds per run (medians; Garage shares the machine's cores with the client):\n")
print("| workload | r2seal client | Garage, r2seal run | rclone client | Garage, rclone run |")
print("|---|---|---|---|---|")
for label, (rc_, rs, cc, cs) in [("small", cpu[0:4]), ("large", cpu[4:8])]:
    if not math.isnan(rc_):
        print(f"| {label} | {rc_:.2f} | {rs:.2f} | {cc:.2f} | {cs:.2f} |")
inplace = [statistics.median(float(x) for x in a.split()) for a in sys.argv[17:23]]
parts_runs = [float(x) for x in sys.argv[23].split()]
parts = [statistics.median(float(x) for x in a.split()) for a in sys.argv[23:26]]
print("\nIn place (`r2seal migrate URL` on a server-side copy of the same objects; no rclone "
      "equivalent), medians:\n")
print("| workload | time | client CPU | Garage CPU |")
print("|---|---|---|---|")
for label, work, unit, (t, c, g) in [
    (f"{small:,} x 4 KiB, 16 at once", small, "obj/s", inplace[0:3]),
    (f"{large} x 64 MiB, 4 at once", large * 64, "MiB/s", inplace[3:6]),
]:
    if not math.isnan(t):
        print(f"| {label} | {t:.2f} s ({work / t:.0f} {unit}) | {c:.2f} s | {g:.2f} s |")
t = statistics.median(runs[2])
if math.isnan(t):
    sys.exit(0)
print("\nBaseline in the same run: the large objects as multipart uploads of 16 MiB parts "
      "(`--multipart-threshold 16`, how r2seal wrote them before 2026-11-26), medians:\n")
print("| workload | time | multipart / streamed single-PUT time | client CPU | Garage CPU | runs |")
print("|---|---|---|---|---|---|")
print(f"| {large} x 64 MiB, 4 at once | {parts[0]:.2f} s ({large * 64 / parts[0]:.0f} MiB/s) "
      f"| **{parts[0] / t:.2f}x** | {parts[1]:.2f} s | {parts[2]:.2f} s "
      f"| {' '.join(map(str, parts_runs))} |")
PY
