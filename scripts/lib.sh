# Shared helpers for berth's scripts. Source it; it defines functions only.

# Where berth keeps expensive artefacts (kernels, L1 harness images), outside the repository.
berth_cache_dir() {
  echo "${BERTH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth}"
}

# berth_need_packages PKG...: installs the Debian packages that are missing.
berth_need_packages() {
  local missing=()
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "berth: installing ${missing[*]}" >&2
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2; then
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
}

# berth_log MESSAGE: a progress line on stderr.
berth_log() {
  echo "berth: $*" >&2
}
