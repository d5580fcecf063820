#!/usr/bin/env bash
# Benchmark: r2seal seal/open against Debian's age on the same file, in one run,
# reported as ratios (this machine is noisy; absolute figures drift, ratios less).
# Also peak RSS of a 1 GiB seal and open through stdin/stdout.
#
#   bash bench/format.sh [SIZE_MIB]      # default 256; writes bench/out/format.md
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-256}
runs=${RUNS:-10}

for tool in age hyperfine /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: needs $tool (apt-get install age hyperfine time)" >&2; exit 1; }
done
cargo build --release --quiet --bin r2seal
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
r2seal="$target_dir/release/r2seal"
out=bench/out
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$r2seal" keygen -o "$work/key.txt" > "$work/recipient"
rcpt=$(cat "$work/recipient")
head -c $((size_mib << 20)) /dev/urandom > "$work/plain"
"$r2seal" seal -r "$rcpt" -o "$work/sealed.r2s" "$work/plain"
age -r "$rcpt" -o "$work/sealed.age" "$work/plain"

# Interleaved runs, outputs to /dev/null so the disk is not what we measure.
hyperfine -N --warmup 2 --runs "$runs" --export-json "$out/format.json" \
  -n "age seal" "age -r $rcpt -o /dev/null $work/plain" \
  -n "r2seal seal" "$r2seal seal -r $rcpt -o /dev/null $work/plain" \
  -n "age open" "age -d -i $work/key.txt -o /dev/null $work/sealed.age" \
  -n "r2seal open" "$r2seal open -i $work/key.txt -o /dev/null $work/sealed.r2s" >/dev/null

# Peak RSS for 1 GiB through pipes (bounded memory, whatever the size).
rss() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -n 1; }
seal_rss=$(head -c 1073741824 /dev/zero | rss "$r2seal" seal -r "$rcpt")
head -c 1073741824 /dev/zero | "$r2seal" seal -r "$rcpt" > "$work/gig.r2s"
open_rss=$(rss "$r2seal" open -i "$work/key.txt" < "$work/gig.r2s")
age_seal_rss=$(head -c 1073741824 /dev/zero | rss age -r "$rcpt")

python3 - "$out/format.json" "$size_mib" "$seal_rss" "$open_rss" "$age_seal_rss" "$(nproc)" > "$out/format.md" <<'PY'
import json, sys
res = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
size = int(sys.argv[2])
def mibs(name): return size / res[name]["median"]
print(f"| {size} MiB, median of {len(res['age seal']['times'])} runs, {sys.argv[6]} cores | age | r2seal | r2seal ÷ age |")
print("|---|---|---|---|")
for op in ("seal", "open"):
    a, r = mibs(f"age {op}"), mibs(f"r2seal {op}")
    print(f"| {op} throughput | {a:,.0f} MiB/s | {r:,.0f} MiB/s | **{r/a:.2f}×** |")
print()
print(f"Peak RSS, 1 GiB through stdin/stdout: r2seal seal {int(sys.argv[3])/1024:.1f} MiB, "
      f"r2seal open {int(sys.argv[4])/1024:.1f} MiB (age seal {int(sys.argv[5])/1024:.1f} MiB).")
PY
cat "$out/format.md"
