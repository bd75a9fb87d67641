#!/usr/bin/env bash
# check-kernel-config.sh FRAGMENT CONFIG
# Fails, listing each one, when an option of FRAGMENT is not set as asked in the final CONFIG.
# Kconfig drops options whose dependencies are missing without a word: this is the check.
set -euo pipefail
fragment=${1:?usage: check-kernel-config.sh FRAGMENT CONFIG}
config=${2:?usage: check-kernel-config.sh FRAGMENT CONFIG}
[ -r "$fragment" ] || { echo "check-kernel-config: cannot read fragment $fragment" >&2; exit 2; }
[ -r "$config" ] || { echo "check-kernel-config: cannot read config $config" >&2; exit 2; }

missing=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*)
      name=${line%%=*}
      want=${line#*=}
      ;;
    "# CONFIG_"*" is not set")
      name=${line#\# }
      name=${name%% *}
      want=n
      ;;
    *) continue ;;
  esac
  got=$(grep -E "^${name}=" "$config" | tail -n 1 | cut -d= -f2- || true)
  if [ -z "$got" ]; then
    got=n
  fi
  if [ "$got" != "$want" ]; then
    echo "  $name: asked $want, got $got" >&2
    missing=$((missing + 1))
  fi
done <"$fragment"

if [ "$missing" -ne 0 ]; then
  echo "check-kernel-config: $missing option(s) of $fragment are not set as asked in $config (missing dependencies?)" >&2
  exit 1
fi
echo "check-kernel-config: all options of $(basename "$fragment") are set as asked" >&2
