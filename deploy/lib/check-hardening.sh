#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Checks running containers against the shared service definitions (deploy/lib/services.json),
# from what the engine reports (`docker inspect`), not from what a deploy file says: read-only
# root, capabilities, no-new-privileges, tmpfs, memory and pids limits, json-file log rotation, a
# health check, a non-root app; PostgreSQL and Redis only on internal networks and unpublished;
# the app on an internal and a non-internal network with its admin port unpublished. Also
# prints each container's image ID and registry digest (what to pin).
#
#   deploy/lib/check-hardening.sh [--filter FILTER]... [--expect SERVICES] [--swarm]
#
# Containers are those labelled userstack.service=<service> (the label comes from
# services.json), narrowed by docker ps --filter FILTER (e.g. label=com.docker.compose.project=x,
# name=^userstack-). The Docker endpoint is DOCKER_HOST / DOCKER_CONTEXT as usual. --expect
# (default "app db redis") names the services that must have a running container. Exits 1 if
# anything is missing, with one line per finding. --swarm: the containers are Swarm tasks
# (deploy/swarm), which `docker stack deploy` cannot give no-new-privileges: that item is
# reported as "n/a" instead of missing (docs/security.md, "What Swarm cannot express"). A tmpfs
# counts as either a --tmpfs or a tmpfs mount (Swarm's form).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
source "$here/common.sh"
SERVICES_FILE=${SERVICES_FILE:-$here/services.json}
ADMIN_PORT=${ADMIN_PORT:-9000}

filters=(--filter label=userstack.service --filter status=running)
expect="app db redis"
swarm=false
while (($#)); do
    case $1 in
        --filter) (($# >= 2)) || die "--filter needs a value"; filters+=(--filter "$2"); shift ;;
        --expect) (($# >= 2)) || die "--expect needs a value"; expect=$2; shift ;;
        --swarm) swarm=true ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
command -v jq >/dev/null || die "jq is not installed"

mapfile -t ids < <(docker ps -q "${filters[@]}")
((${#ids[@]})) || die "no running container labelled userstack.service matches ${filters[*]}"
inspect=$(docker inspect "${ids[@]}")
# Which networks are internal, for the network rules.
mapfile -t network_names < <(jq -r '[.[].NetworkSettings.Networks | keys[]] | unique[]' <<<"$inspect")
networks=$(docker network inspect "${network_names[@]}" | jq 'map({(.Name): .Internal}) | add')
# The definitions, interpolated as the deploy paths do (${NAME:-default} from the environment).
definitions=$(jq '
    def interpolate: walk(if type == "string" then
        gsub("\\$\\{(?<name>[A-Za-z_][A-Za-z0-9_]*):-(?<default>[^}]*)\\}";
             ($ENV[.name] // "") as $v | if $v == "" then .default else $v end) else . end);
    .services | interpolate' "$SERVICES_FILE")

report=$(jq -r --argjson defs "$definitions" --argjson internal "$networks" \
    --arg expect "$expect" --arg admin "$ADMIN_PORT/tcp" --argjson swarm "$swarm" '
    def bytes: if type == "number" then . else
        (capture("^(?<n>[0-9.]+)\\s*(?<u>[kmgKMG]?)[bB]?$") // error("cannot read size \(.)")) |
        (.n | tonumber) * ({"": 1, k: 1024, m: 1048576, g: 1073741824}[.u | ascii_downcase]) | floor end;
    def cap: ascii_upcase | sub("^CAP_"; "");
    def item($ok; $what; $detail): "\(if $ok then "ok     " else "MISSING" end) \(.name) \($what)\(if $ok then "" else ": \($detail)" end)";
    def na($what; $why): "n/a     \(.name) \($what): \($why)";
    (map(.Config.Labels["userstack.service"]) ) as $running
    | ($expect | split(" ") | map(select(length > 0)) - $running | map("MISSING (no running container) service \(.)")[]),
    (.[] | . as $c | .Config.Labels["userstack.service"] as $svc | ($defs[$svc] // {}) as $d
     | {name: ($c.Name | ltrimstr("/") + " [\($svc)]")} as $n
     | ($c.NetworkSettings.Networks | keys) as $nets
     | ($nets | map($internal[.])) as $kinds
     | ($c.HostConfig.PortBindings // {} | with_entries(select(.value != null and (.value | length) > 0)) | keys) as $published
     | ($n | item($d != {}; "has a definition in services.json"; "no service \($svc)")),
       ($n | item(($c.HostConfig.ReadonlyRootfs == ($d.read_only // false)); "read-only root"; "ReadonlyRootfs=\($c.HostConfig.ReadonlyRootfs)")),
       ($n | item(((($d.cap_drop // []) | map(cap)) - (($c.HostConfig.CapDrop // []) | map(cap)) | length) == 0; "cap-drop \($d.cap_drop // [] | join(","))"; "CapDrop=\($c.HostConfig.CapDrop)")),
       ($n | item(((($c.HostConfig.CapAdd // []) | map(cap) | sort) == (($d.cap_add // []) | map(cap) | sort)); "only the capabilities \($d.cap_add // [] | join(",") | if . == "" then "(none)" else . end)"; "CapAdd=\($c.HostConfig.CapAdd)")),
       (($c.HostConfig.SecurityOpt // []) | any(test("^no-new-privileges(:true|=true)?$"))) as $nnp
       | if $swarm and ($nnp | not) then ($n | na("no-new-privileges"; "docker stack deploy cannot set it"))
         else ($n | item($nnp; "no-new-privileges"; "SecurityOpt=\($c.HostConfig.SecurityOpt)")) end,
       ((($c.HostConfig.Tmpfs // {}) | keys) + (($c.HostConfig.Mounts // []) | map(select(.Type == "tmpfs") | .Target))) as $tmpfs
       | ($n | item(((($d.tmpfs // []) | map(split(":")[0]) | sort) - $tmpfs | length) == 0; "tmpfs \($d.tmpfs // [] | map(split(":")[0]) | join(","))"; "tmpfs \($tmpfs)")),
       ($n | item(($c.HostConfig.Memory > 0 and ($d.mem_limit == null or $c.HostConfig.Memory == ($d.mem_limit | bytes))); "memory limit \($d.mem_limit)"; "Memory=\($c.HostConfig.Memory)")),
       ($n | item((($c.HostConfig.PidsLimit // 0) > 0 and ($d.pids_limit == null or $c.HostConfig.PidsLimit == $d.pids_limit)); "pids limit \($d.pids_limit)"; "PidsLimit=\($c.HostConfig.PidsLimit)")),
       ($n | item(($c.HostConfig.LogConfig.Type == "json-file" and ($c.HostConfig.LogConfig.Config["max-size"] // "") != "" and ($c.HostConfig.LogConfig.Config["max-file"] // "") != "" and (($d.logging.options // {}) | to_entries | all(. as $o | $c.HostConfig.LogConfig.Config[$o.key] == $o.value))); "json-file log rotation \($d.logging.options // {} | to_entries | map("\(.key)=\(.value)") | join(" "))"; "LogConfig=\($c.HostConfig.LogConfig)")),
       ($n | item(($c.State.Health != null); "a health check"; "no health check")),
       (if $svc == "app" then
          ($n | item((($c.Config.User // "") | test("^(0|root)?(:.*)?$") | not); "a non-root user"; "User=\($c.Config.User)")),
          ($n | item(($kinds | any(. == true)) and ($kinds | any(. == false)); "on an internal and a non-internal network"; "networks \($nets)")),
          ($n | item(($published | index($admin)) == null; "admin port \($admin) not published"; "published \($published)"))
        else
          ($n | item(($kinds | all(. == true)); "only on internal networks"; "networks \($nets | map("\(.)(internal=\($internal[.]))"))")),
          ($n | item(($published | length) == 0; "no published port"; "published \($published)"))
        end),
       "image  \($n.name) \($c.Image) \($c.Config.Image)"
    )' <<<"$inspect")

# The registry digest of each image, where it has one (local builds have only an ID).
while read -r _ name service image ref; do
    digest=$(registry_digest "$image" "$ref") || digest="(no registry digest: pin by ID)"
    printf 'image   %s %s %s %s\n' "$name" "$service" "$image" "$digest"
done < <(grep '^image ' <<<"$report")
grep -v '^image ' <<<"$report"
missing=$(grep -c '^MISSING' <<<"$report" || true)
if ((missing)); then
    printf '%s item(s) missing\n' "$missing"
    exit 1
fi
printf 'every item present on %s container(s)\n' "${#ids[@]}"
