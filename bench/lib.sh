# Shared set-up for the bucket benchmarks (bench/bucket.sh, jobs.sh, gateway.sh, rotate.sh);
# sourced, not run. Starts a local Garage through .ci/services.sh unless an endpoint is
# configured already, and stops it again at exit (with everything registered by
# `bench_at_exit`), so a benchmark leaves no server or data behind.
#
#   source bench/lib.sh
#   ... "$WORK/file"                              # scratch directory, removed at exit
#   bench_rclone_conf "$WORK/rclone.conf" "$BUCKET/$RUN/rclone"   # remotes garage: and crypt:
#                                                 # (and more s3 remotes: see below)
#   rc copy ...                                   # rclone with that config

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The CI cache's target directory: a warm release build when CI has run here before.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${R2SEAL_CACHE:-$HOME/.cache/r2seal-ci}/target}"

_bench_exit_steps=()
bench_at_exit() { _bench_exit_steps+=("$1"); }
_bench_exit() { # last registered, first run: data goes before the server that holds it
    local i
    for ((i = ${#_bench_exit_steps[@]} - 1; i >= 0; i--)); do
        eval "${_bench_exit_steps[i]}" || true
    done
}
trap _bench_exit EXIT

if [ -z "${R2SEAL_TEST_S3_ENDPOINT:-}" ]; then
    # shellcheck source=/dev/null
    source .ci/services.sh
    bench_at_exit r2seal_services_stop
fi
export AWS_ENDPOINT_URL="$R2SEAL_TEST_S3_ENDPOINT" AWS_REGION="${AWS_REGION:-auto}"

# BENCH_QUICKACK=1 (needs root): the loopback route ACKs at once for the run, and is put
# back at exit. Garage sends a response's headers and a block-backed body in two writes
# without TCP_NODELAY, so the body waits for the headers' ACK, which the client's kernel
# delays by up to 40 ms: a 4 KiB GET took 45 ms here, 3.8 ms with this (1,000 B, stored
# inline, and 100 KB took 4-5 ms either way). Both tools pay that per small GET, which
# makes small-object runs wait on the server's latency, not on anyone's CPU.
BENCH_SETUP="loopback delayed ACKs: kernel default"
if [ "${BENCH_QUICKACK:-0}" = 1 ]; then
    _bench_lo_route="$(ip route show table local 127.0.0.1 | head -1)"
    # shellcheck disable=SC2086 # the route's words are arguments
    ip route change $_bench_lo_route table local quickack 1 \
        || { echo "bench: BENCH_QUICKACK=1 needs root (ip route change)" >&2; exit 1; }
    bench_at_exit "ip route change $_bench_lo_route table local"
    BENCH_SETUP="loopback delayed ACKs: off (BENCH_QUICKACK=1)"
fi
# Garage's metadata engine changes its CPU per request (~22 s against ~40 s for the small
# migration, LMDB against SQLite). BENCH_SETUP (loopback ACKs, engine) goes into the jobs
# and gateway tables.
[ -z "${R2SEAL_GARAGE_DB_ENGINE:-}" ] || BENCH_SETUP="$BENCH_SETUP; Garage metadata in $R2SEAL_GARAGE_DB_ENGINE"

# Scratch space for the benchmark's files, removed at exit.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/r2seal-bench.XXXXXX")"
bench_at_exit "rm -rf '$WORK'"

# bench_rclone_conf [--s3 SETTING]... FILE CRYPT_PATH [NAME ENDPOINT KEY_ID SECRET]...
# Remotes `garage:` and `crypt:` (CRYPT_PATH on garage:) for rc, and an s3 remote NAME for
# each further four arguments. Every s3 remote has the same settings, plus each
# `--s3 'key = value'`, so that a benchmark comparing remotes compares like with like.
bench_rclone_conf() {
    local settings=()
    while [ "${1:-}" = --s3 ]; do settings+=("$2"); shift 2; done
    local file="$1" crypt="$2"
    shift 2
    export RCLONE_CONFIG="$file"
    command -v rclone >/dev/null || { echo "bench: rclone missing: apt-get install rclone" >&2; exit 1; }
    {
        _bench_s3_remote garage "$R2SEAL_TEST_S3_ENDPOINT" "$AWS_ACCESS_KEY_ID" \
            "$AWS_SECRET_ACCESS_KEY" "${settings[@]}"
        cat <<CONF
[crypt]
type = crypt
remote = garage:$crypt
password = $(rclone obscure "r2seal-bench-$crypt")

CONF
        while [ $# -ge 4 ]; do
            _bench_s3_remote "$1" "$2" "$3" "$4" "${settings[@]}"
            shift 4
        done
    } >"$file"
    [ $# -eq 0 ] || { echo "bench_rclone_conf: a remote is NAME ENDPOINT KEY_ID SECRET" >&2; exit 1; }
}
_bench_s3_remote() { # NAME ENDPOINT KEY_ID SECRET [SETTING...]: one s3 remote's section
    cat <<CONF
[$1]
type = s3
provider = Other
endpoint = $2
access_key_id = $3
secret_access_key = $4
region = auto
force_path_style = true
CONF
    shift 4
    [ $# -eq 0 ] || printf '%s\n' "$@"
    echo
}

# Debian's rclone rejects the environment's AWS_CA_BUNDLE with a plain http endpoint.
rc() { env -u AWS_CA_BUNDLE rclone -q "$@"; }

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }

# CPU seconds (user + system) process PID has used so far; 0 if there is none.
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f\n", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# Write out dirty pages, then wait (at most 30 s) until the local Garage is idle: the
# kernel's writeback of earlier steps' files (30 s after they were written, by default),
# and the background work a purge or a big write leaves in Garage, would otherwise be
# billed to whichever run comes next.
bench_settle() {
    local pid="${R2SEAL_GARAGE_PID:-0}" a b
    sync
    [ "$pid" != 0 ] || return 0
    for _ in $(seq 60); do
        a="$(proc_cpu "$pid")"
        sleep 0.5
        b="$(proc_cpu "$pid")"
        python3 -c "import sys; sys.exit(0 if $b - $a < 0.03 else 1)" && return 0
    done
    return 0 # still busy after 30 s: measure anyway (under `set -e`, not a failure)
}

# bench_measure CMD...: waits for an idle server (bench_settle), then runs CMD (output dropped) and sets WALL (seconds), CPU (the CPU
# seconds CMD and its children used) and SERVER_CPU (what the local Garage used meanwhile;
# 0 against an endpoint set from outside). On a small machine the server shares the cores,
# so these say where the time went.
bench_measure() {
    local t0 t1 g0 report
    bench_settle
    g0="$(proc_cpu "${R2SEAL_GARAGE_PID:-0}")"
    t0="$(now)"
    report="$( { TIMEFORMAT='%U %S'; time "$@" >/dev/null 2>&1; } 2>&1 )"
    t1="$(now)"
    WALL="$(secs "$t0" "$t1")"
    CPU="$(echo "$report" | tail -1 | awk '{printf "%.2f", $1 + $2}')"
    SERVER_CPU="$(secs "$g0" "$(proc_cpu "${R2SEAL_GARAGE_PID:-0}")")"
}
