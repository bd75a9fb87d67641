# Shared helpers for berth's scripts. Source it; it defines functions only.

# Where berth keeps expensive artefacts (kernels, L1 harness images), outside the repository.
berth_cache_dir() {
  echo "${BERTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}"
}

# berth_as_root CMD...: runs CMD as root (through sudo unless this already is root).
berth_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# The ordinary user that scripts/test.sh runs the rootless tests as (scripts/as-test-user.sh):
# in group kvm, not root, without a password or a login shell.
berth_test_user() {
  echo "${BERTH_TEST_USER:-berth-test}"
}

# berth_ensure_test_user: makes the group kvm and the test user (with a group of its own,
# and in kvm) where they are missing; run as root or with sudo. Idempotent.
berth_ensure_test_user() {
  local user
  user=$(berth_test_user)
  getent group kvm >/dev/null || berth_as_root groupadd --system kvm
  if ! id -u "$user" >/dev/null 2>&1; then
    berth_log "creating the test user $user (group kvm)"
    berth_as_root useradd --system --user-group --groups kvm --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
  elif [[ " $(id -nG "$user") " != *" kvm "* ]]; then
    berth_as_root usermod -aG kvm "$user"
  fi
}

# berth_need_packages PKG[=VERSION]...: installs the Debian packages that are missing; a
# PKG=VERSION counts as missing unless exactly VERSION is installed.
berth_need_packages() {
  local missing=()
  local p
  for p in "$@"; do
    if [ "${p#*=}" != "$p" ]; then
      [ "$(dpkg-query -W -f='${Status} ${Version}' "${p%%=*}" 2>/dev/null)" = "install ok installed ${p#*=}" ] || missing+=("$p")
    else
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "berth: installing ${missing[*]}" >&2
  if ! berth_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    berth_as_root apt-get update -q >&2
    berth_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
}

# berth_log MESSAGE: a progress line on stderr.
berth_log() {
  echo "berth: $*" >&2
}

# berth_cargo_build_dir DIR MAX_GIB: prints the folder under DIR where cargo builds with
# the current toolchain (DIR/<hash of rustc -vV>), made ready. Only that folder is kept:
# where it does not exist yet, the newest other one in DIR is taken over (cargo rebuilds
# only what differs), any others go, and one grown past MAX_GIB starts over.
berth_cargo_build_dir() {
  local builds=$1 max_gib=$2 dir newest old
  dir="$builds/$(rustc -vV | sha256sum | cut -c1-16)"
  if [ ! -d "$dir" ]; then
    # shellcheck disable=SC2012
    newest=$(ls -1t "$builds" 2>/dev/null | head -n 1)
    [ -z "$newest" ] || mv "$builds/$newest" "$dir"
  fi
  mkdir -p "$dir"
  if [ "$(du -s -BG "$dir" | cut -f1 | tr -d G)" -gt "$max_gib" ]; then
    berth_log "the cached build in $dir passed $max_gib GiB: starting it over"
    rm -rf "${dir:?}"
    mkdir -p "$dir"
  fi
  for old in "$builds"/*; do
    [ "$old" = "$dir" ] || rm -rf "${old:?}"
  done
  echo "$dir"
}
