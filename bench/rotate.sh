#!/usr/bin/env bash
# rotate (rewrap in place, server-side copy) vs rotate --rekey (download, re-encrypt,
# upload), on the same objects in a local Garage, interleaved (examples/rotate_bench.rs).
#
#   bash bench/rotate.sh        # 20 x 64 MiB and 2,000 x 4 KiB, 3 rounds each
#
# Starts .ci/services.sh unless R2SEAL_TEST_S3_ENDPOINT is set. One run on a shared
# 2-core machine: read the ratios, not the absolute times.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
cargo build --release -j 2 --features s3 --example rotate_bench >&2
BENCH="$CARGO_TARGET_DIR/release/examples/rotate_bench"
RUN="bench-rotate-$$-$(date +%s)"
ROUNDS="${ROUNDS:-3}"
echo "## 20 x 64 MiB" 
"$BENCH" "s3://$R2SEAL_TEST_S3_BUCKET/$RUN/large/" 20 $((64 * 1024 * 1024)) "$ROUNDS" 16
echo "## 2000 x 4 KiB"
"$BENCH" "s3://$R2SEAL_TEST_S3_BUCKET/$RUN/small/" 2000 4096 "$ROUNDS" 16
