#!/usr/bin/env bash
# as-test-user.sh [--small-disk MIB] -- CMD [ARGS...]
#
# Runs CMD as the ordinary test user (scripts/lib.sh's berth_test_user: berth-test unless
# BERTH_TEST_USER names another; scripts/setup.sh makes it, in group kvm), the way a
# person runs berth: not root, with a HOME, XDG_CONFIG_HOME, XDG_DATA_HOME,
# XDG_CACHE_HOME and a private XDG_RUNTIME_DIR of its own, fresh for this run and removed
# after it; the rest of the environment as it is. Run it as root: on the host, or inside
# scripts/with-kvm.sh's machine (`with-kvm.sh -- as-test-user.sh -- CMD`). First it
#
# - checks that the user may open /dev/kvm where it exists: group kvm, as udev's rule
#   (or setup.sh) leaves it on a host and as the harness machine's init makes it;
# - lets the user reach what the tests run: CMD, $BERTH_BIN (and berth-vmm beside it),
#   $BERTH_KERNEL, $BERTH_INITRAMFS, $BERTH_DEFAULT_IMAGE, $BERTH_GUEST_PROBE and the
#   working directory. A
#   folder on their way that others may not search (root's home, 0700, which holds
#   ~/.cache/berth and maybe the checkout) gets o+x, which lets them through but not list
#   it; each such change is logged. A file the user still cannot read fails the run;
# - with --small-disk, mounts a tmpfs of MIB MiB that the user owns and names it in
#   BERTH_TEST_SMALL_DISK: the tests that fill a disk use it, since a user cannot mount.
#
# Exits with CMD's status, or 1 when the set-up fails (never 124 or 125, which
# scripts/with-kvm.sh's callers read as the harness's own).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

small_disk_mib=
while [ $# -gt 0 ]; do
  case "$1" in
    --small-disk) small_disk_mib=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "as-test-user: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "as-test-user: no command given (usage: as-test-user.sh [--small-disk MIB] -- CMD ARGS...)" >&2; exit 2; }
case "$small_disk_mib" in *[!0-9]*) echo "as-test-user: --small-disk takes MiB, not '$small_disk_mib'" >&2; exit 2 ;; esac
fail() { echo "as-test-user: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "run this as root: it drops to the test user itself"

user=$(berth_test_user)
uid=$(id -u "$user" 2>/dev/null) || fail "no user $user: scripts/setup.sh makes it"
gid=$(id -g "$user")
[[ " $(id -nG "$user") " == *" kvm "* ]] || fail "$user is not in group kvm: scripts/setup.sh puts it there"
as_user() { setpriv --reuid="$uid" --regid="$gid" --init-groups --inh-caps=-all -- "$@"; }

if [ -e /dev/kvm ] && ! as_user test -r /dev/kvm -a -w /dev/kvm; then
  fail "$user (group kvm) may not open /dev/kvm ($(stat -c '%U:%G %a' /dev/kvm)): give it to group kvm with mode 0660, as udev's rule does"
fi

# reach PATH: makes every folder above PATH searchable by others where the user cannot
# pass it, then checks that the user can read PATH.
reach() {
  local path dir=
  path=$(realpath -e "$1") || fail "$1 does not exist"
  local IFS=/ part
  for part in ${path#/}; do
    [ -d "$dir/$part" ] || break
    dir="$dir/$part"
    if ! as_user test -x "$dir"; then
      berth_log "letting others pass through $dir (chmod o+x) so that $user reaches $path"
      chmod o+x "$dir"
    fi
  done
  as_user test -r "$path" || fail "$user cannot read $path ($(stat -c '%U:%G %a' "$path"))"
}
cmd_path=$(command -v "$1") || fail "no command $1"
reach "$cmd_path"
reach "$PWD"
for var in BERTH_BIN BERTH_KERNEL BERTH_INITRAMFS BERTH_DEFAULT_IMAGE BERTH_GUEST_PROBE; do
  [ -z "${!var:-}" ] || reach "${!var}"
done
if [ -n "${BERTH_BIN:-}" ] && [ -e "$(dirname "$BERTH_BIN")/berth-vmm" ]; then
  reach "$(dirname "$BERTH_BIN")/berth-vmm"
fi

# The user's own folders, fresh for this run, in a folder only it may enter.
base=$(mktemp -d "${TMPDIR:-/tmp}/berth-as-$user.XXXXXX")
mounted=
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  [ -z "$mounted" ] || umount -l "$mounted" 2>/dev/null || true
  rm -rf "$base"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod 0755 "$base"
mkdir -m 0700 "$base/home" "$base/run"
mkdir -p "$base/home/.config" "$base/home/.local/share" "$base/home/.cache"
chown -R "$uid:$gid" "$base/home" "$base/run"
small_disk_env=()
if [ -n "$small_disk_mib" ]; then
  mkdir -m 0700 "$base/small-disk"
  mount -t tmpfs -o "size=${small_disk_mib}m,mode=0700,uid=$uid,gid=$gid" tmpfs "$base/small-disk"
  mounted=$base/small-disk
  small_disk_env=("BERTH_TEST_SMALL_DISK=$base/small-disk")
fi

berth_log "running $1 as $user (uid $uid, groups $(id -nG "$user" | tr ' ' ,))"
set +e
as_user env -u XDG_RUNTIME_DIR -u SUDO_USER -u SUDO_UID -u SUDO_GID -u MAIL \
  HOME="$base/home" USER="$user" LOGNAME="$user" \
  XDG_CONFIG_HOME="$base/home/.config" XDG_DATA_HOME="$base/home/.local/share" \
  XDG_CACHE_HOME="$base/home/.cache" XDG_RUNTIME_DIR="$base/run" \
  "${small_disk_env[@]}" "$@"
rc=$?
set -e
exit $rc
