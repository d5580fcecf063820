# Shared set-up for the bucket benchmarks (bench/bucket.sh, jobs.sh, gateway.sh, rotate.sh);
# sourced, not run. Starts a local Garage through .ci/services.sh unless an endpoint is
# configured already, and stops it again at exit (with everything registered by
# `bench_at_exit`), so a benchmark leaves no server or data behind.
#
#   source bench/lib.sh
#   ... "$WORK/file"                              # scratch directory, removed at exit
#   bench_rclone_conf "$WORK/rclone.conf" "$BUCKET/$RUN/rclone"   # remotes garage: and crypt:
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

# Scratch space for the benchmark's files, removed at exit.
WORK="$(mktemp -d "${TMPDIR:-/tmp}/r2seal-bench.XXXXXX")"
bench_at_exit "rm -rf '$WORK'"

bench_rclone_conf() { # bench_rclone_conf FILE CRYPT_PATH: remotes `garage:` and `crypt:` for rc
    export RCLONE_CONFIG="$1"
    command -v rclone >/dev/null || { echo "bench: rclone missing: apt-get install rclone" >&2; exit 1; }
    cat >"$1" <<CONF
[garage]
type = s3
provider = Other
endpoint = $R2SEAL_TEST_S3_ENDPOINT
access_key_id = $AWS_ACCESS_KEY_ID
secret_access_key = $AWS_SECRET_ACCESS_KEY
region = auto
force_path_style = true

[crypt]
type = crypt
remote = garage:$2
password = $(rclone obscure "r2seal-bench-$2")
CONF
}

# Debian's rclone rejects the environment's AWS_CA_BUNDLE with a plain http endpoint.
rc() { env -u AWS_CA_BUNDLE rclone -q "$@"; }

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.3f}')"; }
