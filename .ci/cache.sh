# Sourced by .ci/run and .ci/fuzz.sh.
#
# A cargo build directory kept between CI runs only grows: every change of features,
# dependencies or the toolchain leaves a generation of artifacts behind, which cargo
# never deletes (this machine's reached 31 GiB over three weeks and filled the disk).
# Past a bound it is started afresh: one cold build, by the same script that works from
# nothing.

# bound_cache DIR GIB: remove DIR if it holds more than GIB GiB.
bound_cache() {
  local dir="$1" max_gib="$2" used_kib
  [ -d "$dir" ] || return 0
  used_kib="$(du -sk "$dir" 2>/dev/null | cut -f1)"
  if [ "${used_kib:-0}" -gt $((max_gib * 1024 * 1024)) ]; then
    echo "ci: $dir holds $((used_kib / 1024 / 1024)) GiB, more than $max_gib: starting it afresh"
    rm -rf "$dir"
  fi
}
