# shellcheck shell=bash
# S3 servers for tests/store_conformance.rs, on loopback only. Source it, don't run it:
#
#     source .ci/services.sh        # installs what is missing, starts both, exports env
#     cargo test --features s3 --test store_conformance
#     r2seal_services_stop          # or leave it to the EXIT trap set below
#
# - Garage 2.5.0, single node (`garage server --single-node --default-bucket`): the main
#   S3-compatible server. Exports R2SEAL_TEST_S3_ENDPOINT, R2SEAL_TEST_S3_BUCKET,
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION=auto. Metadata in LMDB, Garage's
#   default engine (R2SEAL_GARAGE_DB_ENGINE=sqlite for its other one; exported, so the
#   benchmarks can say which they ran on).
# - moto server: Garage accepts If-Match / If-None-Match on PutObject and ignores them, so
#   the conditional-write tests run against moto, which enforces them (checked below on
#   every start). Exports R2SEAL_TEST_S3_COND_ENDPOINT, R2SEAL_TEST_S3_COND_BUCKET,
#   R2SEAL_TEST_S3_COND_ACCESS_KEY_ID, R2SEAL_TEST_S3_COND_SECRET_ACCESS_KEY.
#
# Tools are cached under ${R2SEAL_CACHE:-$HOME/.cache/r2seal-ci}: tools/bin/garage (built
# with `cargo install` when missing: ~15-20 min on 2 cores) and moto-venv/ (pip). Server
# state and logs go to a fresh temp dir, exported as R2SEAL_SERVICES_DIR.
#
# Written to be sourced into a caller that may run under `set -euo pipefail`: nothing here
# changes shell options, every command that may fail is tested, and failure is reported by
# the return status of the source itself.

_r2s_log() { printf '[services] %s\n' "$*" >&2; }

_r2s_hex() { # _r2s_hex NBYTES -> lowercase hex
    od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'
}

_r2s_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_r2s_tail_log() { # _r2s_tail_log NAME FILE
    _r2s_log "---- last lines of $1 log ($2) ----"
    tail -n 40 "$2" >&2 || true
    _r2s_log "---- end of $1 log ----"
}

_r2s_install_garage() {
    local bin="$1" root="$2"
    if [ -x "$bin" ]; then
        return 0
    fi
    _r2s_log "garage not found at $bin: building it (cargo install garage 2.5.0, takes a while)"
    mkdir -p "$root" || return 1
    # Under a lock, so two sources racing on one cache build it once. CARGO_TARGET_DIR is
    # dropped so that the build does not land in the caller's target directory.
    (
        flock 9 || exit 1
        [ -x "$bin" ] && exit 0
        env -u CARGO_TARGET_DIR cargo install garage --version 2.5.0 --locked \
            --root "$root" -j "${CARGO_BUILD_JOBS:-2}"
    ) 9>"$root/.install.lock" || { _r2s_log "cargo install garage failed"; return 1; }
    [ -x "$bin" ]
}

_r2s_install_moto() {
    local venv="$1"
    if [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c 'import moto, boto3' 2>/dev/null; then
        return 0
    fi
    _r2s_log "installing moto[server] into $venv"
    python3 -m venv "$venv" || return 1
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5' || return 1
}

# A signed round trip against an S3 endpoint, with boto3 from the moto venv.
#   _r2s_probe PYTHON MODE ENDPOINT BUCKET KEY SECRET
# MODE "rw": put/get/delete one object (the server is up, the key and bucket work).
# MODE "cond": also create the bucket, then check that If-None-Match and If-Match on
# PutObject are enforced (exit 3 if they are not).
_r2s_probe() {
    "$1" - "$2" "$3" "$4" "$5" "$6" <<'PY'
import sys
import boto3, botocore
from botocore.config import Config
mode, endpoint, bucket, key, secret = sys.argv[1:6]
# moto stores a bucket created from region "auto" under an invalid LocationConstraint;
# it does not check signatures, so the probe signs for us-east-1 there.
s3 = boto3.client(
    "s3", endpoint_url=endpoint, region_name="us-east-1" if mode == "cond" else "auto",
    aws_access_key_id=key, aws_secret_access_key=secret,
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                  connect_timeout=2, read_timeout=10,
                  request_checksum_calculation="when_required",
                  response_checksum_validation="when_required"),
)
def status(call):
    try:
        call()
        return 200
    except botocore.exceptions.ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]
probe = "r2seal-services-probe"
if mode == "cond":
    try:
        s3.create_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
s3.put_object(Bucket=bucket, Key=probe, Body=b"probe")
assert s3.get_object(Bucket=bucket, Key=probe)["Body"].read() == b"probe"
if mode == "cond":
    inm = status(lambda: s3.put_object(Bucket=bucket, Key=probe, Body=b"x", IfNoneMatch="*"))
    im = status(lambda: s3.put_object(Bucket=bucket, Key=probe, Body=b"x", IfMatch='"0123456789abcdef0123456789abcdef"'))
    if inm != 412 or im != 412:
        print(f"conditional PutObject not enforced: If-None-Match -> {inm}, If-Match -> {im}", file=sys.stderr)
        sys.exit(3)
s3.delete_object(Bucket=bucket, Key=probe)
PY
}

# _r2s_wait NAME PID LOG SECONDS PROBE-ARGS... : poll until the probe passes.
_r2s_wait() {
    local name="$1" pid="$2" log="$3" limit="$4" i
    shift 4
    for ((i = 0; i < limit * 4; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            _r2s_log "$name exited during startup"
            _r2s_tail_log "$name" "$log"
            return 1
        fi
        if _r2s_probe "$@" 2>"$log.probe"; then
            return 0
        elif [ $? -eq 3 ]; then
            cat "$log.probe" >&2
            return 3
        fi
        sleep 0.25
    done
    _r2s_log "$name did not answer within ${limit}s; last probe error:"
    tail -n 5 "$log.probe" >&2 || true
    _r2s_tail_log "$name" "$log"
    return 1
}

r2seal_services_stop() {
    local pid
    for pid in ${R2SEAL_GARAGE_PID:-} ${R2SEAL_MOTO_PID:-}; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            # Give it 10 s to exit cleanly, then insist.
            for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    unset R2SEAL_GARAGE_PID R2SEAL_MOTO_PID
    # Keep the logs, drop the data.
    if [ -n "${R2SEAL_SERVICES_DIR:-}" ] && [ -d "$R2SEAL_SERVICES_DIR/garage" ]; then
        rm -rf "$R2SEAL_SERVICES_DIR/garage/meta" "$R2SEAL_SERVICES_DIR/garage/data" || true
    fi
    return 0
}

r2seal_services_start() {
    local cache="${R2SEAL_CACHE:-$HOME/.cache/r2seal-ci}"
    local garage="$cache/tools/bin/garage" venv="$cache/moto-venv"
    local state t0 t1 s3_port rpc_port moto_port access secret bucket="r2seal-test" rc

    _r2s_install_moto "$venv" || { _r2s_log "could not install moto"; return 1; }
    _r2s_install_garage "$garage" "$cache/tools" || return 1
    # tests/jobs_crash.rs runs (and restarts) a Garage of its own from this binary.
    export R2SEAL_GARAGE_BIN="$garage"
    export R2SEAL_GARAGE_DB_ENGINE="${R2SEAL_GARAGE_DB_ENGINE:-lmdb}"

    state="$(mktemp -d "${TMPDIR:-/tmp}/r2seal-services.XXXXXX")" || return 1
    export R2SEAL_SERVICES_DIR="$state"
    mkdir -p "$state/garage/meta" "$state/garage/data" || return 1

    # ---- Garage ----
    s3_port="$(_r2s_free_port)" && rpc_port="$(_r2s_free_port)" || return 1
    # Key formats Garage's own `key create` uses: GK + 24 hex, 64-hex secret.
    access="GK$(_r2s_hex 12)"
    secret="$(_r2s_hex 32)"
    (
        umask 077
        cat >"$state/garage/garage.toml" <<EOF
metadata_dir = "$state/garage/meta"
data_dir = "$state/garage/data"
db_engine = "$R2SEAL_GARAGE_DB_ENGINE"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc_port"
rpc_public_addr = "127.0.0.1:$rpc_port"
rpc_secret = "$(_r2s_hex 32)"

[s3_api]
s3_region = "auto"
api_bind_addr = "127.0.0.1:$s3_port"
EOF
    ) || return 1
    t0=$(date +%s%N)
    GARAGE_DEFAULT_ACCESS_KEY="$access" GARAGE_DEFAULT_SECRET_KEY="$secret" \
        GARAGE_DEFAULT_BUCKET="$bucket" RUST_LOG="${R2SEAL_GARAGE_LOG:-garage=info}" \
        "$garage" -c "$state/garage/garage.toml" server --single-node --default-bucket \
        >"$state/garage.log" 2>&1 </dev/null &
    export R2SEAL_GARAGE_PID=$!
    echo "$R2SEAL_GARAGE_PID" >"$state/garage.pid"
    _r2s_wait garage "$R2SEAL_GARAGE_PID" "$state/garage.log" 60 \
        "$venv/bin/python" rw "http://127.0.0.1:$s3_port" "$bucket" "$access" "$secret" \
        || { r2seal_services_stop; return 1; }
    t1=$(date +%s%N)
    _r2s_log "garage up on 127.0.0.1:$s3_port in $(((t1 - t0) / 1000000)) ms (state: $state)"

    export R2SEAL_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
    export R2SEAL_TEST_S3_BUCKET="$bucket"
    export AWS_ACCESS_KEY_ID="$access"
    export AWS_SECRET_ACCESS_KEY="$secret"
    export AWS_REGION=auto

    # ---- moto (conditional writes) ----
    moto_port="$(_r2s_free_port)" || return 1
    "$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$state/moto.log" 2>&1 </dev/null &
    export R2SEAL_MOTO_PID=$!
    echo "$R2SEAL_MOTO_PID" >"$state/moto.pid"
    # moto accepts any key pair; distinct ones prove the tests use the COND_* variables.
    _r2s_wait moto "$R2SEAL_MOTO_PID" "$state/moto.log" 60 \
        "$venv/bin/python" cond "http://127.0.0.1:$moto_port" r2seal-cond r2seal-moto-key r2seal-moto-secret
    rc=$?
    if [ $rc -ne 0 ]; then
        [ $rc -eq 3 ] && _r2s_log "moto does not enforce conditional puts: use s3s-fs instead"
        r2seal_services_stop
        return 1
    fi
    _r2s_log "moto up on 127.0.0.1:$moto_port, conditional PutObject enforced"
    export R2SEAL_TEST_S3_COND_ENDPOINT="http://127.0.0.1:$moto_port"
    export R2SEAL_TEST_S3_COND_BUCKET=r2seal-cond
    export R2SEAL_TEST_S3_COND_ACCESS_KEY_ID=r2seal-moto-key
    export R2SEAL_TEST_S3_COND_SECRET_ACCESS_KEY=r2seal-moto-secret
    return 0
}

if ! (return 0 2>/dev/null); then
    echo "usage: source ${BASH_SOURCE[0]}   (run directly, its exports would be lost)" >&2
    exit 2
fi

if r2seal_services_start; then
    # Stop the servers when the sourcing shell exits, unless it already has an EXIT trap
    # (then it should call r2seal_services_stop itself).
    if [ -z "$(trap -p EXIT)" ]; then
        trap r2seal_services_stop EXIT
    fi
else
    _r2s_log "failed to start the S3 test servers"
    false
fi
