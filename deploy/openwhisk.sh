#!/usr/bin/env bash
# Creates or updates every OpenWhisk entity of the fleet (README, "Deploy to a data
# center", section 2), once per data center's OpenWhisk, with the same content everywhere:
#
#   triggers  addReadingToDbTrigger, aggregatesTrigger   (plain: the provider fires them)
#   actions   addReadingToDb, aggregatesAction           (actions/*.js, nodejs:20)
#   rules     addReadingToDbRule, aggregatesRule         (enabled)
#   feed      package mqtt (shared, provider_endpoint) and action mqtt/mqtt_feed
#             (annotation feed=true), only with --provider-endpoint / PROVIDER_ENDPOINT
#
# Idempotent: actions and the package are `wsk ... update`d (which creates them when
# missing and keeps parameters bound on them, such as the InfluxDB tokens); a trigger is
# created only when `wsk trigger get` says it does not exist, never updated; a rule is
# created when missing, else updated to the same trigger and action and enabled. A second
# run creates nothing.
#
# No secrets here: the InfluxDB tokens are bound per data center afterwards (printed at
# the end).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: deploy/openwhisk.sh [--provider-endpoint URL] [-i|--insecure] [--apihost HOST]
                           [--auth KEY | -u KEY] [--cert FILE] [--key FILE]

Creates or updates the fleet's OpenWhisk triggers, actions, rules and (with
--provider-endpoint, or PROVIDER_ENDPOINT in the environment) the mqtt feed package, in
the OpenWhisk that wsk points at. -i, --apihost, --auth/-u, --cert and --key are passed to
every wsk call; without them wsk uses its properties (wsk property set).
  --provider-endpoint URL   this data center's provider, e.g.
                            http://mqtt-whisk-provider.fog-dc1.svc:3000
  -h, --help                this text
USAGE
}

die() {
  echo "openwhisk.sh: $*" >&2
  exit 1
}

here=${BASH_SOURCE[0]%/*}
[ "$here" = "${BASH_SOURCE[0]}" ] && here=.
actions_dir="$here/../actions"
provider_endpoint=${PROVIDER_ENDPOINT:-}
wsk_flags=()

while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --provider-endpoint) [ $# -ge 2 ] || die "$1 needs a URL"; provider_endpoint=$2; shift 2 ;;
    --provider-endpoint=*) provider_endpoint=${1#*=}; shift ;;
    -i|--insecure) wsk_flags+=("$1"); shift ;;
    --apihost|--auth|-u|--cert|--key)
      [ $# -ge 2 ] || die "$1 needs a value"; wsk_flags+=("$1" "$2"); shift 2 ;;
    --apihost=*|--auth=*|--cert=*|--key=*) wsk_flags+=("$1"); shift ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

if [ -n "$provider_endpoint" ]; then
  case $provider_endpoint in
    http://?*|https://?*) provider_endpoint=${provider_endpoint%/} ;;
    *) die "--provider-endpoint must be an http(s) URL, got '$provider_endpoint'" ;;
  esac
fi

command -v wsk >/dev/null 2>&1 ||
  die "wsk is not on PATH: install the OpenWhisk CLI (https://github.com/apache/openwhisk-cli/releases) and run again"

for file in addReadingToDb.js aggregatesAction.js mqtt_feed.js; do
  [ -f "$actions_dir/$file" ] || die "$actions_dir/$file is missing: run this script from a checkout of the project"
done

# Every wsk call goes through here, with the caller's flags; its output is kept in $out
# (stdout and stderr) for the caller to show, and any key given with --auth/-u is masked
# in what this script prints.
out=
wsk_run() {
  local status=0
  # (the +"..." form: an empty array is "unbound" to bash 3.2's set -u)
  out=$(wsk ${wsk_flags[@]+"${wsk_flags[@]}"} "$@" 2>&1) || status=$?
  return "$status"
}

mask() {
  local text=$1 i
  for ((i = 0; i < ${#wsk_flags[@]}; i++)); do
    case ${wsk_flags[i]} in
      --auth|-u) [ -n "${wsk_flags[i + 1]:-}" ] && text=${text//"${wsk_flags[i + 1]}"/***} ;;
      --auth=*) [ -n "${wsk_flags[i]#*=}" ] && text=${text//"${wsk_flags[i]#*=}"/***} ;;
    esac
  done
  printf '%s\n' "$text"
}

# wsk "$@", or stop with its output.
wsk_must() {
  wsk_run "$@" || die "wsk $1 $2 ${3:-} failed:
$(mask "$out")"
}

# 0 when `wsk KIND get NAME` finds the entity, 1 when wsk says it does not exist; any
# other failure (network, authentication) stops the script rather than look like a
# missing entity.
exists() {
  if wsk_run "$1" get "$2"; then
    return 0
  fi
  case $out in
    *"does not exist"*) return 1 ;;
  esac
  die "wsk $1 get $2 failed:
$(mask "$out")"
}

if ! wsk_run namespace list; then
  die "wsk is not authenticated: run wsk property set --apihost ... --auth ... or pass --apihost/--auth
(wsk namespace list said: $(mask "$out"))"
fi

ensure_trigger() {
  if exists trigger "$1"; then
    echo "trigger $1: exists, left as it is"
  else
    wsk_must trigger create "$1"
    echo "trigger $1: created"
  fi
}

ensure_action() {
  local name=$1 file=$2
  shift 2
  wsk_must action update "$name" "$file" --kind nodejs:20 "$@"
  echo "action $name: updated from actions/${file##*/}"
}

ensure_rule() {
  local name=$1 trigger=$2 action=$3
  if exists rule "$name"; then
    wsk_must rule update "$name" "$trigger" "$action"
    wsk_must rule enable "$name"
    echo "rule $name: $trigger -> $action, enabled"
  else
    wsk_must rule create "$name" "$trigger" "$action"
    echo "rule $name: created, $trigger -> $action"
  fi
}

ensure_trigger addReadingToDbTrigger
ensure_action addReadingToDb "$actions_dir/addReadingToDb.js"
ensure_rule addReadingToDbRule addReadingToDbTrigger addReadingToDb

ensure_trigger aggregatesTrigger
ensure_action aggregatesAction "$actions_dir/aggregatesAction.js"
ensure_rule aggregatesRule aggregatesTrigger aggregatesAction

if [ -n "$provider_endpoint" ]; then
  wsk_must package update mqtt --shared yes -p provider_endpoint "$provider_endpoint"
  echo "package mqtt: shared, provider_endpoint $provider_endpoint"
  ensure_action mqtt/mqtt_feed "$actions_dir/mqtt_feed.js" -a feed true
elif exists package mqtt; then
  echo "package mqtt: exists, left as it is (no --provider-endpoint given)"
  ensure_action mqtt/mqtt_feed "$actions_dir/mqtt_feed.js" -a feed true
else
  echo "package mqtt: skipped: pass --provider-endpoint URL (or set PROVIDER_ENDPOINT) to install the feed (README, \"The feed\")"
fi

cat <<'EOF_NOTE'

Done. Not done here, per data center (secrets stay out of this script and the ConfigMap):
bind the InfluxDB tokens on the actions. `-p` replaces every parameter bound on an
action, so give all of an action's tokens in one command:

  wsk action update addReadingToDb -p influx_token <token that can write the local readings bucket>
  wsk action update aggregatesAction -p local_influx_token <token that can read the local readings bucket> \
      -p central_influx_token <token that can write the central aggregates bucket>

(Everything else, URLs, orgs, buckets and datacenter_id, travels in FIRE_PARAMS and
ALARM_PAYLOAD.) Triggers left from the old Node.js provider or the alarms package still
have their feed: `wsk trigger delete` them and run this script again (README).
EOF_NOTE
