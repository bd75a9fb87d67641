#!/usr/bin/env bash
# build-default-image.sh: builds berth's offline default image, berth.local/busybox:latest,
# from Debian's busybox-static: one layer with busybox, its applet links, /etc/passwd and
# /etc/group, and the usual empty directories. The result is one archive that is both an
# OCI image layout and a `docker save` archive, so `berth load -i FILE` (or `docker load`)
# imports it with no network. Reproducible: same busybox, same bytes.
#
# Prints the archive's path (cached under $(berth_cache_dir)/default-image/<key>/).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

name=${BERTH_DEFAULT_IMAGE_NAME:-berth.local/busybox:latest}
busybox=/bin/busybox
[ -x "$busybox" ] || berth_need_packages busybox-static
command -v jq >/dev/null || berth_need_packages jq
if ! "$busybox" --list >/dev/null 2>&1 || ldd "$busybox" >/dev/null 2>&1; then
  echo "build-default-image.sh: $busybox must be a static busybox (package busybox-static)" >&2
  exit 1
fi

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac

key=$(cat "$busybox" "$0" <(echo "$name $arch") | sha256sum | cut -c1-16)
out_dir="$(berth_cache_dir)/default-image/$key"
out="$out_dir/busybox.tar"
if [ -s "$out" ]; then
  echo "$out"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,etc,dev,proc,sys,tmp,root,home,var/tmp,usr/bin,usr/sbin,sbin}
chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
chmod 700 "$rootfs/root"
cp "$busybox" "$rootfs/bin/busybox"
chmod 755 "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] && continue
  ln -s busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
printf 'berth\n' >"$rootfs/etc/hostname"
chmod 644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/hostname"

# Timestamps come from the busybox binary, so the same busybox gives the same bytes.
epoch=$(stat -c %Y "$busybox")
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

layout="$work/layout"
mkdir -p "$layout/blobs/sha256"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$rootfs" -cf "$work/layer.tar" .
diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -6 <"$work/layer.tar" >"$work/layer.tar.gz"
layer_digest=$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)
layer_size=$(stat -c %s "$work/layer.tar.gz")
mv "$work/layer.tar.gz" "$layout/blobs/sha256/$layer_digest"

version=$("$busybox" 2>&1 | head -1 | awk '{print $2}')
jq -cn --arg arch "$arch" --arg diff "$diff_id" --arg created "$created" --arg v "$version" '{
  created: $created, architecture: $arch, os: "linux",
  config: {Env: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["/bin/sh"], WorkingDir: "/",
           Labels: {"org.opencontainers.image.title": "berth default image",
                    "org.opencontainers.image.description": ("busybox " + $v + " from Debian busybox-static")}},
  rootfs: {type: "layers", diff_ids: [$diff]},
  history: [{created: $created, created_by: ("scripts/build-default-image.sh: busybox " + $v)},
            {created: $created, created_by: "CMD [\"/bin/sh\"]", empty_layer: true}]
}' >"$work/config.json"
config_digest=$(sha256sum "$work/config.json" | cut -d' ' -f1)
config_size=$(stat -c %s "$work/config.json")
mv "$work/config.json" "$layout/blobs/sha256/$config_digest"

jq -cn --arg c "sha256:$config_digest" --argjson cs "$config_size" \
  --arg l "sha256:$layer_digest" --argjson ls "$layer_size" '{
  schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
  config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
  layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l, size: $ls}]
}' >"$work/manifest.json"
manifest_digest=$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
manifest_size=$(stat -c %s "$work/manifest.json")
mv "$work/manifest.json" "$layout/blobs/sha256/$manifest_digest"

tag=${name##*:}
jq -cn --arg m "sha256:$manifest_digest" --argjson ms "$manifest_size" --arg name "$name" --arg tag "$tag" '{
  schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
  manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
               annotations: {"io.containerd.image.name": $name, "org.opencontainers.image.ref.name": $tag}}]
}' >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
jq -cn --arg c "blobs/sha256/$config_digest" --arg l "blobs/sha256/$layer_digest" --arg name "$name" \
  '[{Config: $c, RepoTags: [$name], Layers: [$l]}]' >"$layout/manifest.json"

mkdir -p "$out_dir"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$layout" -cf "$out.tmp" .
mv "$out.tmp" "$out"
berth_log "default image $name ($arch, busybox $version): $out"
echo "$out"
