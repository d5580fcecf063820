#!/usr/bin/env bash
# Benchmark: r2seal seal/open against Debian's age on the same file, in one run.
# Runs are interleaved (age, r2seal, age, r2seal, …) so load drift on a shared
# machine hits both alike; the report gives medians and their ratio.
# Also peak RSS of a 1 GiB seal and open through stdin/stdout, and the per-object key
# work (examples/envelope_bench.rs: an envelope's seal and open against age's X25519 wrap).
#
#   bash bench/format.sh [SIZE_MIB]      # default 256; writes bench/out/format.md
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-256}
rounds=${ROUNDS:-11}

for tool in age python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: needs $tool (apt-get install age time)" >&2; exit 1; }
done
cargo build --release --quiet --bin r2seal --example envelope_bench
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

# Peak RSS for 1 GiB through pipes (bounded memory, whatever the size).
rss() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -n 1; }
seal_rss=$(head -c 1073741824 /dev/zero | rss "$r2seal" seal -r "$rcpt")
head -c 1073741824 /dev/zero | "$r2seal" seal -r "$rcpt" > "$work/gig.r2s"
open_rss=$(rss "$r2seal" open -i "$work/key.txt" < "$work/gig.r2s")
age_rss=$(rss age -d -i "$work/key.txt" < "$work/gig.r2s")
rm -f "$work/gig.r2s"

envelope=$("$target_dir/release/examples/envelope_bench" "$rounds")

R2SEAL="$r2seal" RCPT="$rcpt" WORK="$work" SIZE="$size_mib" ROUNDS="$rounds" ENVELOPE="$envelope" \
SEAL_RSS="$seal_rss" OPEN_RSS="$open_rss" AGE_RSS="$age_rss" python3 - > "$out/format.md" <<'PY'
import json, os, statistics, subprocess, time
e = os.environ
w, r2, rc = e["WORK"], e["R2SEAL"], e["RCPT"]
# Outputs go to /dev/null so the disk is not what we measure; inputs are in page cache.
cmds = {
    "age seal": ["age", "-r", rc, "-o", "/dev/null", f"{w}/plain"],
    "r2seal seal": [r2, "seal", "-r", rc, "-o", "/dev/null", f"{w}/plain"],
    "age open": ["age", "-d", "-i", f"{w}/key.txt", "-o", "/dev/null", f"{w}/sealed.age"],
    "r2seal open": [r2, "open", "-i", f"{w}/key.txt", "-o", "/dev/null", f"{w}/sealed.r2s"],
}
times = {k: [] for k in cmds}
for i in range(int(e["ROUNDS"]) + 1):
    for name, cmd in cmds.items():
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        if i:  # the first round warms caches
            times[name].append(time.perf_counter() - t)
size = int(e["SIZE"])
mibs = lambda k: size / statistics.median(times[k])
print(f"| {size} MiB file, median of {len(times['age seal'])} interleaved runs, {os.cpu_count()} cores | age 1.1.1 | r2seal | r2seal ÷ age |")
print("|---|---|---|---|")
for op in ("seal", "open"):
    a, r = mibs(f"age {op}"), mibs(f"r2seal {op}")
    print(f"| {op} | {a:,.0f} MiB/s | {r:,.0f} MiB/s | **{r / a:.2f}×** |")
mib = lambda kib: int(kib) / 1024
print()
print(f"Peak RSS through stdin/stdout, 1 GiB: r2seal seal {mib(e['SEAL_RSS']):.1f} MiB, "
      f"r2seal open {mib(e['OPEN_RSS']):.1f} MiB (age open {mib(e['AGE_RSS']):.1f} MiB).")
v = json.loads(e["ENVELOPE"])
print()
print(f"Per-object key work, one X25519 recipient (median of {v['rounds']} rounds of {v['count']}; "
      f"X25519 by {v['x25519']}): r2seal seals an envelope (file key, stanza, name tag, sealed "
      f"metadata, header MAC) in {v['seal_us']:.0f} µs, **{v['seal_vs_age_wrap']:.2f}×** the time "
      f"of age's X25519 wrap alone ({v['age_wrap_us']:.0f} µs), and opens one in {v['open_us']:.0f} µs, "
      f"**{v['open_vs_age_unwrap']:.2f}×** age's unwrap alone ({v['age_unwrap_us']:.0f} µs); "
      f"{v['open_cached_us']:.0f} µs with the file key remembered.")
PY
cat "$out/format.md"
