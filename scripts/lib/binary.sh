# shellcheck shell=bash
# Sourced: prints the path of the release ferrokv binary, ${CARGO_TARGET_DIR:-target}/release/ferrokv
# (relative to the repository root), building it first when missing. With cargo available it
# always runs cargo build, which does nothing when the binary is up to date, so a stale binary
# is never used. FERROKV_BIN=/path/to/ferrokv skips all of this.

ferrokv_binary() {
  if [ -n "${FERROKV_BIN:-}" ]; then
    [ -x "$FERROKV_BIN" ] || { echo "FERROKV_BIN=$FERROKV_BIN is not an executable" >&2; return 1; }
    echo "$FERROKV_BIN"
    return 0
  fi
  local bin="${CARGO_TARGET_DIR:-target}/release/ferrokv"
  if command -v cargo >/dev/null 2>&1; then
    echo "== cargo build --release --locked -p ferrokv-node --bin ferrokv" >&2
    cargo build --release --locked -p ferrokv-node --bin ferrokv >&2
  elif [ ! -x "$bin" ]; then
    echo "$bin is missing and cargo is not installed" >&2
    return 1
  fi
  case $bin in /*) echo "$bin" ;; *) echo "$PWD/$bin" ;; esac
}
