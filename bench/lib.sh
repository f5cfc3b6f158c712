# Helpers shared by the bench scripts. Source it after setting ROOT (the repository root);
# messages carry the sourcing script's name.

die() { echo "${0##*/}: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# Set FERROKV to the release build in the target directory unless it is already set; die when
# there is no executable ferrokv.
find_ferrokv() {
  if [[ -z ${FERROKV:-} ]]; then
    for c in "${CARGO_TARGET_DIR:-$ROOT/target}/release/ferrokv" "$ROOT/target/release/ferrokv"; do
      [[ -x $c ]] && { FERROKV=$c; break; }
    done
  fi
  [[ -n ${FERROKV:-} && -x $FERROKV ]] ||
    die "no ferrokv binary: build with 'cargo build --release -p ferrokv-node --bin ferrokv' or pass --ferrokv"
}

# install_missing INSTALL PACKAGE...: apt-get install the Debian packages given (none: nothing
# to do), or die naming them when INSTALL is 0 (--no-install).
install_missing() {
  local install=$1
  shift
  (($# == 0)) && return 0
  [[ $install == 1 ]] || die "missing: $* (run without --no-install, as root)"
  log "installing $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -y -qq --no-install-recommends install "$@" >/dev/null
}
