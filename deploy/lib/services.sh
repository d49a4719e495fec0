# shellcheck shell=bash
# The shared service definitions (deploy/lib/services.json) as `docker run` options, for the
# deploy paths that do not read compose files (deploy/manual/up.sh). Source it; do not run it.
#
#   service_options SERVICE   the options, NUL-separated (mapfile -d '' arr < <(service_options db))
#   service_command SERVICE   the command after the image, NUL-separated (may be empty)
#
# A key this translator does not know is an error, never silently dropped: what compose gives a
# service, `docker run` must give it too. ${NAME:-default} takes NAME from the environment and
# $$ is a literal $, as in compose.

SERVICES_FILE=${SERVICES_FILE:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/services.json}

_services_jq() {
    command -v jq >/dev/null || die "jq is not installed (it reads $SERVICES_FILE)"
    jq -j --arg service "$1" '
        def interpolate:
            if type == "string" then
                gsub("\\$\\{(?<name>[A-Za-z_][A-Za-z0-9_]*):-(?<default>[^}]*)\\}";
                     ($ENV[.name] // "") as $v | if $v == "" then .default else $v end)
                | gsub("\\$\\$"; "$")
            else . end;
        def known: ["labels", "read_only", "cap_drop", "cap_add", "security_opt", "tmpfs",
                    "mem_limit", "pids_limit", "logging", "healthcheck", "command"];
        (.services[$service] // error("no service \($service) in the shared definitions")) as $s
        | ($s | keys - known) as $unknown
        | if ($unknown | length) > 0 then error("services.json: \($service) has keys this translator cannot give docker run: \($unknown | join(", "))") else . end
        | $s | '"$2"' | tostring | interpolate | . + "\u0000"' "$SERVICES_FILE"
}

service_options() {
    _services_jq "$1" '
        (.labels // {} | to_entries[] | "--label=\(.key)=\(.value)"),
        (if .read_only then "--read-only" else empty end),
        (.cap_drop[]? | "--cap-drop=\(.)"),
        (.cap_add[]? | "--cap-add=\(.)"),
        (.security_opt[]? | "--security-opt=\(.)"),
        (.tmpfs[]? | "--tmpfs=\(.)"),
        (.mem_limit // empty | "--memory=\(.)"),
        (.pids_limit // empty | "--pids-limit=\(.)"),
        (.logging // empty | "--log-driver=\(.driver)", (.options // {} | to_entries[] | "--log-opt=\(.key)=\(.value)")),
        (.healthcheck // empty
            | (.test // empty
                | if .[0] == "CMD-SHELL" then "--health-cmd=\(.[1])"
                  else error("healthcheck: only CMD-SHELL can be given to docker run (an exec-form test belongs in the image)") end),
              (.interval // empty | "--health-interval=\(.)"),
              (.timeout // empty | "--health-timeout=\(.)"),
              (.retries // empty | "--health-retries=\(.)"),
              (.start_period // empty | "--health-start-period=\(.)"))'
}

service_command() {
    _services_jq "$1" '.command[]?'
}
