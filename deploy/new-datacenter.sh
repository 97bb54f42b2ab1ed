#!/usr/bin/env bash
# Writes deploy/overlays/<id>/, the overlay of a new data center: the base (configmap.yml
# and deployment.yaml, which are dc1's) with that data center's namespace, names,
# instance label, topics, client id, FIRE_PARAMS, alarm zone and payload, and image tag.
# The values follow dc1's conventions (README, "Deploy to a data center"); edit the files
# afterwards where a data center differs, e.g. its InfluxDB URL.
#
#   deploy/new-datacenter.sh dc3 --timezone Europe/Berlin [--tag 0.1.0] [--force]
#
# Writes files only; applies nothing. dc1's and dc2's overlays were made with it.
# OVERLAYS=DIR writes DIR/<id> instead (the packaging test's scratch copy).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'USAGE'
usage: deploy/new-datacenter.sh ID --timezone ZONE [--tag TAG] [--force]

Writes deploy/overlays/ID/ (kustomization.yaml, datacenter.yaml, configmap.yaml).
  ID               the data center's id: lower-case letters, digits and '-', e.g. dc3;
                   its namespace is fog-ID, its broker topics ID/sensors/#
  --timezone ZONE  IANA zone of the daily alarm (ALARM_TIMEZONE), e.g. Europe/Rome
  --tag TAG        image tag it runs (default: deployment.yaml's)
  --force          overwrite an existing overlay
  -h, --help       this text
USAGE
}

die() {
  echo "new-datacenter.sh: $*" >&2
  exit 2
}

id='' timezone='' tag='' force=''
while [ $# -gt 0 ]; do
  case "$1" in
    --timezone) [ $# -ge 2 ] || die "--timezone needs a value"; timezone=$2; shift 2 ;;
    --tag) [ $# -ge 2 ] || die "--tag needs a value"; tag=$2; shift 2 ;;
    --force) force=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$id" ] || die "one ID only (got $id and $1)"; id=$1; shift ;;
  esac
done
[ -n "$id" ] || { usage >&2; exit 2; }
[ -n "$timezone" ] || die "--timezone is required: the zone of $id's 03:00 alarm"
# The namespace fog-ID is a DNS label (at most 63 characters).
[[ "$id" =~ ^[a-z0-9]([a-z0-9-]{0,57}[a-z0-9])?$ ]] ||
  die "ID must be lower-case letters, digits and '-', at most 59 characters: $id"
[[ "$timezone" =~ ^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$ ]] || die "not an IANA zone name: $timezone"
if [ -d /usr/share/zoneinfo ] && [ ! -f /usr/share/zoneinfo/"$timezone" ]; then
  die "unknown zone $timezone (not in /usr/share/zoneinfo)"
fi
image=$(sed -n 's/^ *image: *\([^ #]*\).*/\1/p' deployment.yaml | head -n 1)
[ -n "$image" ] || die "no image: line in deployment.yaml"
image_name=${image%:*}
[ -n "$tag" ] || tag=${image##*:}

dir=${OVERLAYS:-deploy/overlays}/$id
if [ -e "$dir" ] && [ -z "$force" ]; then
  die "$dir exists (--force overwrites it)"
fi
mkdir -p "$dir"

cat >"$dir/kustomization.yaml" <<KUSTOMIZATION
# Data center $id: the base with $id's own keys. Apply (README, "Deploy to a
# data center"):
#
#   kubectl apply -k deploy/overlays/$id
#
# Its secrets are never in git: the Secret mqtt-whisk-provider-$id in namespace fog-$id,
# made once by hand, with OW_AUTH, MQTT_PASSWORD, STATE_KEY and (optional)
# FIRE_SECRET_PARAMS, a JSON object merged into the static routes' message fires, mounted as a file:
#   FIRE_SECRET_PARAMS='{"influx_token": "<$id InfluxDB token>"}'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: fog-$id
resources:
  - datacenter.yaml
components:
  - ../../components/datacenter
patches:
  - path: configmap.yaml
    target:
      kind: ConfigMap
      labelSelector: app.kubernetes.io/name=mqtt-whisk-provider
images:
  # The version $id runs. Upgrades go one data center at a time (README, "Upgrading the
  # fleet").
  - name: $image_name
    newTag: "$tag"
KUSTOMIZATION

cat >"$dir/datacenter.yaml" <<DATACENTER
# $id's id, read by deploy/components/datacenter to rename dc1's names and labels;
# local-config: used while rendering, never applied.
apiVersion: v1
kind: ConfigMap
metadata:
  name: datacenter
  annotations:
    config.kubernetes.io/local-config: "true"
data:
  id: $id
DATACENTER

influx=http://influxdb.fog-$id.svc.cluster.local:8086
cat >"$dir/configmap.yaml" <<CONFIGMAP
# $id's own keys, merged into the base's ConfigMap (configmap.yml says what each
# means); every other key is the base's, the same in every data center. Same format as
# configmap.yml: one KEY: 'value' per line.
apiVersion: v1
kind: ConfigMap
metadata:
  name: mqtt-whisk-provider-$id
data:
  MQTT_TOPICS: '$id/sensors/#'
  MQTT_CLIENT_ID: 'mqtt-whisk-provider-$id'
  FIRE_PARAMS: '{"datacenter_id": "$id", "influx_url": "$influx", "influx_org": "fog", "influx_bucket": "${id//-/_}_readings"}'
  ALARM_TIMEZONE: '$timezone'
  ALARM_PAYLOAD: '{"datacenter_id": "$id", "local_influx_url": "$influx", "local_influx_org": "fog", "local_influx_bucket": "${id//-/_}_readings", "central_influx_url": "https://influxdb.central.fog.example.org:8086", "central_influx_org": "fog", "central_influx_bucket": "aggregates", "timezone": "$timezone"}'
  # $id's InfluxDB token, once the Secret mqtt-whisk-provider-$id has the key
  # FIRE_SECRET_PARAMS (kustomization.yaml), where deployment.yaml mounts it:
  # FIRE_SECRET_PARAMS_FILE: '/etc/mqtt-whisk-provider/secret/fire-secret-params.json'
CONFIGMAP

echo "wrote $dir: check its values, then"
echo "  kubectl apply -k $dir"
