#!/usr/bin/env bash
# haproxy-runtime.sh: a swimd exec hook that moves an HAProxy server in and out of rotation
# through HAProxy's runtime API (the admin "stats socket"), so HAProxy follows swimd's view.
#
#   member.failed, member.critical    -> set server BACKEND/SERVER state maint
#   member.recovered, member.joined,
#   member.passing, member.ready      -> set server BACKEND/SERVER state ready
#   member.left, member.maintenance   -> set server BACKEND/SERVER state drain
#   anything else (suspect, updated, reaped): nothing, exit 0. Suspicion alone must not move
#   traffic; a reaped member stays in maint until it comes back.
#
# `swimd maint on` on a member is `member.maintenance`: drain, like a leave; swimd itself
# never fails over a member in maintenance, nor puts it back before `swimd maint off`
# (`member.ready`).
#
# `left` is drain, not maint: a member that leaves gracefully is shutting down on purpose;
# drain stops new traffic but lets HAProxy finish what it has (and keeps persistent sessions
# until they end), as swimd's own agent-check answer for `left` does. `ready` also clears a
# drain, so a member that left and joins again is back in rotation.
#
# Usage (argv from the hook's `command`; each option also has an environment variable):
#   haproxy-runtime.sh -b BACKEND[,BACKEND…] [-s SOCKET] [-n SERVER | -t TAG]
#     -b, HAPROXY_BACKEND  backend(s) holding the server; comma-separated for several.
#                          Required.
#     -s, HAPROXY_SOCKET   the admin socket: a path (a Unix socket) or a socat address such
#                          as TCP:127.0.0.1:9999. Default: /run/haproxy/admin.sock.
#     -n, HAPROXY_SERVER   the server name. Default: the member's name ($SWIMD_MEMBER_NAME),
#                          so name the servers in haproxy.cfg after the swimd members.
#     -t, HAPROXY_SERVER_TAG  take the server name from this member tag instead
#                          (e.g. -t haproxy_server reads $SWIMD_TAG_HAPROXY_SERVER).
#     -T, HAPROXY_TIMEOUT  seconds to wait for HAProxy's answer. Default: 3.
#
# Exit status (swimd's exec contract): 0 done (or nothing to do); 1 retry later (the socket
# cannot be reached, or HAProxy answered anything but the empty line that means success,
# e.g. "No such server."); 2 usage or configuration error (never retried).
# Needs socat (Debian package socat).
#
# swimd config on the HAProxy host (scope = "local": the agent on the LB host drives its
# own HAProxy; every LB host runs its own agent with this hook):
#
#   [[hooks]]
#   name = "haproxy"
#   kind = "exec"
#   scope = "local"
#   events = ["member.failed", "member.recovered", "member.joined", "member.left",
#             "member.maintenance", "member.ready"]
#   tags = { role = "web" }            # only the members that are servers of the backend
#   command = ["/etc/swimd/hooks/haproxy-runtime.sh", "-b", "web", "-s", "/run/haproxy/admin.sock"]
#   timeout = "5s"
#   # hold_down (10s), flap damping and max_failed_fraction (0.5) apply: keep them.
#
# and in haproxy.cfg: `stats socket /run/haproxy/admin.sock mode 660 level admin` (Debian's
# default) with the swimd user in group haproxy. Under systemd the hardened swimd unit needs
# a drop-in for the socket (docs/haproxy.md):
#   [Service]
#   SupplementaryGroups=haproxy
#   ReadWritePaths=/run/haproxy
set -euo pipefail

usage() {
    echo "haproxy-runtime.sh: $*" >&2
    echo "usage: haproxy-runtime.sh -b BACKEND[,BACKEND…] [-s SOCKET] [-n SERVER | -t TAG] [-T SECONDS]" >&2
    exit 2
}

backends=${HAPROXY_BACKEND:-}
socket=${HAPROXY_SOCKET:-/run/haproxy/admin.sock}
server=${HAPROXY_SERVER:-}
server_tag=${HAPROXY_SERVER_TAG:-}
timeout=${HAPROXY_TIMEOUT:-3}

while getopts ":b:s:n:t:T:h" opt; do
    case $opt in
        b) backends=$OPTARG ;;
        s) socket=$OPTARG ;;
        n) server=$OPTARG ;;
        t) server_tag=$OPTARG ;;
        T) timeout=$OPTARG ;;
        h) usage "help" ;;
        :) usage "-$OPTARG needs a value" ;;
        *) usage "unknown option -$OPTARG" ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || usage "unexpected argument: $1"

event=${SWIMD_EVENT:-}
[ -n "$event" ] || usage "SWIMD_EVENT is not set (run me as a swimd exec hook)"

case $event in
    member.failed | member.critical) state=maint ;;
    member.recovered | member.joined | member.passing | member.ready) state=ready ;;
    member.left | member.maintenance) state=drain ;;
    *) exit 0 ;;
esac

[ -n "$backends" ] || usage "no backend: pass -b BACKEND or set HAPROXY_BACKEND"
if [ -n "$server_tag" ]; then
    [ -z "$server" ] || usage "-n and -t exclude each other"
    key=$(printf '%s' "$server_tag" | tr '[:lower:]' '[:upper:]' | tr -c 'A-Z0-9' '_')
    var="SWIMD_TAG_$key"
    server=${!var:-}
    [ -n "$server" ] || usage "member ${SWIMD_MEMBER_NAME:-?} has no tag $server_tag (\$$var)"
fi
server=${server:-${SWIMD_MEMBER_NAME:-}}
[ -n "$server" ] || usage "no server name: SWIMD_MEMBER_NAME is not set and neither -n nor -t given"
case $timeout in
    '' | *[!0-9]*) usage "-T wants whole seconds, not $timeout" ;;
esac

# Names go into a runtime API command line: no spaces, ';' (command separator) or '/'.
valid_name() {
    case $1 in
        '' | *[!A-Za-z0-9._:-]*) return 1 ;;
    esac
}
valid_name "$server" || usage "server name $server has characters HAProxy's runtime API cannot take"

case $socket in
    /*) address="UNIX-CONNECT:$socket" ;;
    *) address=$socket ;;
esac
command -v socat >/dev/null || usage "socat is not installed (Debian package socat)"

IFS=, read -r -a list <<<"$backends"
status=0
for backend in "${list[@]}"; do
    valid_name "$backend" || usage "backend name $backend has characters HAProxy's runtime API cannot take"
    cmd="set server $backend/$server state $state"
    # One command per connection: HAProxy answers and closes. An empty line is success;
    # any text is an error message.
    if ! reply=$(printf '%s\n' "$cmd" | socat -t "$timeout" -T "$timeout" - "$address" 2>&1); then
        echo "$cmd: cannot reach HAProxy at $socket: $reply" >&2
        status=1
        continue
    fi
    reply=$(printf '%s' "$reply" | tr -d '\r' | sed -e '/^[[:space:]]*$/d')
    if [ -n "$reply" ]; then
        echo "$cmd: HAProxy answered: $reply" >&2
        status=1
    fi
done
exit "$status"
