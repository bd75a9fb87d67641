# Shared helpers for berth's scripts. Source it; it defines functions only.

# Where berth keeps expensive artefacts (kernels, L1 harness images), outside the repository.
berth_cache_dir() {
  echo "${BERTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}"
}

# berth_as_root CMD...: runs CMD as root (through sudo unless this already is root).
berth_as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
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
