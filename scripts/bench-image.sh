#!/usr/bin/env bash
# bench-image.sh [RUNS]: pull a ~100 MB multi-layer image from the loopback registry and
# make it guest-ready, berth against the earlier root-only path (extract, then mkfs.erofs)
# and `skopeo copy` + `umoci unpack`, side by side.
#
# The image (built here from random data, so nothing compresses it away) has five gzip
# layers: 5000 small files (20 MB), then four layers of 20 MB files. It is pushed once with
# skopeo to the anonymous registry of scripts/registry.sh (started if needed).
#  - berth:  `berth pull` into an empty store: parallel verified downloads, and each layer
#            unpacked and packed into its read-only erofs image for the guest.
#  - extract + mkfs.erofs: what berth did before its userspace erofs writer (and what
#            needs root): the blobs fetched (`skopeo copy`), each layer extracted onto the
#            host filesystem with owners and xattrs (`tar -xpz`), then `mkfs.erofs` over it.
#  - skopeo + umoci: `skopeo copy docker://... oci:DIR` then `umoci unpack` into a bundle
#            (the rootfs a runtime would use).
# Each run starts from empty directories (and dropped page cache is not attempted: all
# sides read the same warm registry files). Prints every run, the medians, the ratios of
# berth to the others (goals: <= 0.5 against extract + mkfs.erofs, <= 1.0 against
# skopeo + umoci) and what each leaves on disk. Needs root (the earlier path and umoci
# create owners and device nodes; berth itself does not).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

runs=${1:-5}
[ "$(id -u)" -eq 0 ] || { echo "bench-image.sh: run as root" >&2; exit 1; }
command -v skopeo >/dev/null || berth_need_packages skopeo
command -v umoci >/dev/null || berth_need_packages umoci
command -v jq >/dev/null || berth_need_packages jq
command -v mkfs.erofs >/dev/null || berth_need_packages erofs-utils

berth_log "building berth (release)"
(cd "$root" && cargo build --release -q -p berth)
berth="${CARGO_TARGET_DIR:-$root/target}/release/berth"

if [ -z "${BERTH_TEST_REGISTRY:-}" ]; then
  eval "$("$here/registry.sh" start)"
fi
reg=$BERTH_TEST_REGISTRY

work=$(mktemp -d /var/tmp/berth-bench-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

# ---- the image --------------------------------------------------------------------------
layout="$work/layout"
mkdir -p "$layout/blobs/sha256"
diff_ids=()
layers_json=()
add_layer() { # DIR
  local dir=$1 tarf="$work/layer.tar" diff digest size
  tar --sort=name --owner=0 --group=0 --numeric-owner -C "$dir" -cf "$tarf" .
  diff=sha256:$(sha256sum "$tarf" | cut -d' ' -f1)
  gzip -1 -n <"$tarf" >"$tarf.gz"
  digest=$(sha256sum "$tarf.gz" | cut -d' ' -f1)
  size=$(stat -c %s "$tarf.gz")
  mv "$tarf.gz" "$layout/blobs/sha256/$digest"
  rm -f "$tarf"
  diff_ids+=("\"$diff\"")
  layers_json+=("{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$digest\",\"size\":$size}")
}
berth_log "building a ~100 MB five-layer image from random data"
d="$work/l0"
mkdir -p "$d"
for i in $(seq 0 49); do
  mkdir -p "$d/dir$i"
  head -c $((100 * 4096)) /dev/urandom | split -b 4096 -a 3 - "$d/dir$i/f"
done
add_layer "$d"
rm -rf "$d"
for l in 1 2 3 4; do
  d="$work/l$l"
  mkdir -p "$d/data$l"
  for f in 1 2 3 4; do head -c $((5 * 1024 * 1024)) /dev/urandom >"$d/data$l/blob$f"; done
  add_layer "$d"
  rm -rf "$d"
done
case "$(uname -m)" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
ids=$(IFS=,; echo "${diff_ids[*]}")
lays=$(IFS=,; echo "${layers_json[*]}")
printf '{"architecture":"%s","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[%s]}}' \
  "$arch" "$ids" >"$work/config.json"
cd_=$(sha256sum "$work/config.json" | cut -d' ' -f1)
cs=$(stat -c %s "$work/config.json")
mv "$work/config.json" "$layout/blobs/sha256/$cd_"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' \
  "$cd_" "$cs" "$lays" >"$work/manifest.json"
md=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
ms=$(stat -c %s "$work/manifest.json")
mv "$work/manifest.json" "$layout/blobs/sha256/$md"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
  "$md" "$ms" >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
total=$(du -sb "$layout/blobs" | cut -f1)
repo="bench/random-$$"
skopeo copy --quiet --preserve-digests --dest-tls-verify=false "oci:$layout:v1" "docker://$reg/$repo:v1"
image="$reg/$repo:v1"
berth_log "image $image: $((total / 1000000)) MB compressed in 5 layers"

# ---- the runs ---------------------------------------------------------------------------
now() { date +%s.%N; }
berth_times=()
old_times=()
skopeo_times=()
for run in $(seq 1 "$runs"); do
  store="$work/berth-$run"
  t0=$(now)
  BERTH_ROOT="$store" "$berth" pull -q "$image" >/dev/null
  t1=$(now)
  layers=$(find "$store/layers/sha256" -name '*.erofs' | wc -l)
  [ "$layers" -eq 5 ] || { echo "bench-image.sh: berth prepared $layers layer images, expected 5" >&2; exit 1; }
  berth_bytes=$(find "$store/layers/sha256" -name '*.erofs' -exec cat {} + | wc -c)
  rm -rf "$store"
  bt=$(echo "$t1 - $t0" | bc)

  old="$work/old-$run"
  mkdir -p "$old"
  t0=$(now)
  skopeo copy --quiet --src-tls-verify=false "docker://$image" "oci:$old/oci:v1"
  mapfile -t blobs < <(jq -r '.manifests[0].digest' "$old/oci/index.json" |
    sed 's/^sha256://' | xargs -I{} jq -r '.layers[].digest' "$old/oci/blobs/sha256/{}" | sed 's/^sha256://')
  for i in "${!blobs[@]}"; do
    mkdir -p "$old/l$i"
    tar -xzpf "$old/oci/blobs/sha256/${blobs[$i]}" -C "$old/l$i" --numeric-owner --xattrs --xattrs-include='*'
    mkfs.erofs "$old/l$i.erofs" "$old/l$i" >/dev/null 2>&1
  done
  t1=$(now)
  [ "${#blobs[@]}" -eq 5 ] || { echo "bench-image.sh: the earlier path saw ${#blobs[@]} layers, expected 5" >&2; exit 1; }
  old_bytes=$(cat "$old"/l*.erofs | wc -c)
  rm -rf "$old"
  ot=$(echo "$t1 - $t0" | bc)

  oci="$work/oci-$run"
  bundle="$work/bundle-$run"
  t0=$(now)
  skopeo copy --quiet --src-tls-verify=false "docker://$image" "oci:$oci:v1"
  umoci unpack --image "$oci:v1" "$bundle" >/dev/null
  t1=$(now)
  [ -d "$bundle/rootfs/data4" ] || { echo "bench-image.sh: umoci bundle incomplete" >&2; exit 1; }
  umoci_bytes=$(du -sb "$bundle/rootfs" | cut -f1)
  rm -rf "$oci" "$bundle"
  st=$(echo "$t1 - $t0" | bc)
  printf 'run %d: berth %.3f s   extract+mkfs.erofs %.3f s   skopeo+umoci %.3f s\n' "$run" "$bt" "$ot" "$st"
  berth_times+=("$bt")
  old_times+=("$ot")
  skopeo_times+=("$st")
done

python3 - "${berth_times[*]}" "${old_times[*]}" "${skopeo_times[*]}" "$berth_bytes" "$old_bytes" "$umoci_bytes" <<'EOF'
import statistics, sys
b, o, s = ([float(x) for x in a.split()] for a in sys.argv[1:4])
bb, ob, ub = (int(x) / 1e6 for x in sys.argv[4:7])
mb, mo, ms = statistics.median(b), statistics.median(o), statistics.median(s)
print(f"median of {len(b)} runs: berth pull (guest-ready erofs layers) {mb:.3f} s, "
      f"extract + mkfs.erofs {mo:.3f} s, skopeo copy + umoci unpack {ms:.3f} s")
print(f"on disk: berth's layer images {bb:.1f} MB, mkfs.erofs images {ob:.1f} MB, umoci rootfs {ub:.1f} MB")
print(f"ratio berth / extract+mkfs.erofs: {mb / mo:.2f} (goal <= 0.5)")
print(f"ratio berth / skopeo+umoci: {mb / ms:.2f} (goal <= 1.0)")
EOF
