#!/bin/bash
# A mixed-version cluster on loopback (docs/upgrading.md): two agents of the previous release
# and two of this checkout, as in the middle of a rolling upgrade. Checks that
#   1. all four see all four alive;
#   2. a new agent put in maintenance (`swimd maint on --reason upgrade`) is seen in
#      maintenance by the new agents and alive by the old ones (they skip the field), for
#      MAINT_WATCH seconds without a refutation storm (its incarnation, as every agent lists
#      it, rises by at most 2);
#   3. a SIGKILLed old agent, then a SIGKILLed new one, is listed failed by every survivor,
#      and prints how long that took.
# It also reports the software each agent lists for the others (advertised by releases
# after v0.1.0), with a WARNING when a new agent lists none for another new one.
# Prints PASS or FAIL with the reasons; exits 1 on FAIL. Stops every agent it started and
# removes its files on exit.
#
#   benches/mixed-version.sh                 # previous release: v0.1.0
#   SWIMD_OLD_TAG=v0.2.0 benches/mixed-version.sh
#
# Builds the old release in a git worktree (SWIMD_OLD_WORKTREE, default
# /tmp/swimd-mixed-TAG; an existing one at that tag is used and kept, one it adds is
# removed) with `cargo build --release --locked` into SWIMD_OLD_TARGET (default
# /tmp/swimd-mixed-TAG-target, kept as a build cache), and this checkout the same way into
# CARGO_TARGET_DIR (default ./target). Agents on 127.0.78.1-4, ports 7946 (gossip), 7947
# (API), 9946 (metrics); needs git, cargo and jq.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
old_tag=${SWIMD_OLD_TAG:-v0.1.0}
old_tree=${SWIMD_OLD_WORKTREE:-/tmp/swimd-mixed-$old_tag}
old_target=${SWIMD_OLD_TARGET:-/tmp/swimd-mixed-$old_tag-target}
new_target=${CARGO_TARGET_DIR:-$repo/target}
maint_watch=${MAINT_WATCH:-10}
for tool in git cargo jq; do
    command -v "$tool" > /dev/null || { echo "mixed-version: needs $tool" >&2; exit 1; }
done
# Both trees build a package called swimd 0.1.0 at the same relative paths, so cargo would
# take one tree's build for the other's in a shared target folder.
if [ "$(realpath -m "$old_target")" = "$(realpath -m "$new_target")" ]; then
    echo "mixed-version: SWIMD_OLD_TARGET and CARGO_TARGET_DIR must differ" >&2
    exit 1
fi

work=$(mktemp -d /tmp/swimd-mixed.XXXXXX)
added_tree=false
pids=(0 0 0 0 0)
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    local i
    for i in 1 2 3 4; do
        if [ "${pids[$i]}" != 0 ]; then kill -TERM "${pids[$i]}" 2> /dev/null || true; fi
    done
    # A graceful leave takes at most 3 s; whatever is left after 10 s is killed.
    for _ in $(seq 100); do
        local running=false
        for i in 1 2 3 4; do
            if [ "${pids[$i]}" != 0 ] && kill -0 "${pids[$i]}" 2> /dev/null; then running=true; fi
        done
        $running || break
        sleep 0.1
    done
    for i in 1 2 3 4; do
        if [ "${pids[$i]}" != 0 ]; then kill -KILL "${pids[$i]}" 2> /dev/null || true; fi
    done
    wait 2> /dev/null || true
    rm -rf "$work"
    if $added_tree; then git -C "$repo" worktree remove --force "$old_tree" || true; fi
}
trap cleanup EXIT

say() { echo "[$(date +%T)] $*"; }
failures=()
warnings=()
fail() {
    failures+=("$*")
    say "FAIL: $*"
}

# --- builds --------------------------------------------------------------------------------
old_commit=$(git rev-parse "$old_tag^{commit}")
if [ -e "$old_tree" ]; then
    if [ "$(git -C "$old_tree" rev-parse HEAD)" != "$old_commit" ]; then
        echo "mixed-version: $old_tree exists and is not at $old_tag; remove it or set SWIMD_OLD_WORKTREE" >&2
        exit 1
    fi
else
    git worktree add --quiet --detach "$old_tree" "$old_tag"
    added_tree=true
fi
say "building $old_tag in $old_tree"
(cd "$old_tree" && CARGO_TARGET_DIR=$old_target cargo build --release --locked --quiet)
say "building this checkout ($(git rev-parse --short HEAD))"
cargo build --release --locked --quiet
mkdir -p "$work/bin"
cp "$old_target/release/swimd" "$work/bin/swimd-old"
cp "$new_target/release/swimd" "$work/bin/swimd-new"
old_version=$("$work/bin/swimd-old" --version)
new_version=$("$work/bin/swimd-new" --version)
say "old: $old_version; new: $new_version"
case "$old_version" in
*"($(git rev-parse --short=12 "$old_commit"))"*) ;;
*)
    echo "mixed-version: the old binary is not $old_tag ($old_commit)" >&2
    exit 1
    ;;
esac
if [ "$old_version" = "$new_version" ]; then
    echo "mixed-version: both binaries say $old_version: nothing to compare" >&2
    exit 1
fi

# --- the cluster ---------------------------------------------------------------------------
# node-1 (the seed) and node-2 run the old release, node-3 and node-4 this checkout.
bin=("" "$work/bin/swimd-old" "$work/bin/swimd-old" "$work/bin/swimd-new" "$work/bin/swimd-new")
release=("" old old new new)
ip() { echo "127.0.78.$1"; }
api() { echo "$(ip "$1"):7947"; }

for i in 1 2 3 4; do
    # The API and metrics ports (TCP); a taken gossip port (UDP) stops its agent at start.
    for port in 7947 9946; do
        if (exec 3<> "/dev/tcp/$(ip "$i")/$port") 2> /dev/null; then
            echo "mixed-version: $(ip "$i"):$port is in use (another run, or tools/symbol-order.sh?)" >&2
            exit 1
        fi
    done
done

# The new agents take the old ones' statements unsigned, as docs/upgrading.md says to while
# upgrading from v0.1.0 (which signs nothing); the old agents do not know the setting.
unsigned() {
    if [ "$1" -ge 3 ]; then echo "accept_unsigned = true"; fi
}

# Certificates from the old release, as an existing cluster's would be.
"${bin[1]}" tls init --dir "$work/tls" --cluster mixed > /dev/null
for i in 1 2 3 4; do
    "${bin[1]}" tls issue "node-$i" --dir "$work/tls" --ip "$(ip "$i")" > /dev/null
    cat > "$work/node-$i.toml" << EOF
[node]
name = "node-$i"
cluster = "mixed"

[gossip]
bind = "$(ip "$i"):7946"
seeds = ["$(ip 1):7946"]
$(unsigned "$i")

[tls]
ca = "tls/ca.pem"
cert = "tls/node-$i.pem"
key = "tls/node-$i-key.pem"

[api]
listen = "$(api "$i")"

[metrics]
listen = "$(ip "$i"):9946"

[state]
dir = "state/node-$i"
EOF
    "${bin[$i]}" validate "$work/node-$i.toml" > /dev/null
done

start() {
    (cd "$work" && RUST_LOG=info exec "${bin[$1]}" agent --config "node-$1.toml" >> "node-$1.log" 2>&1) &
    pids[$1]=$!
}
for i in 1 2 3 4; do start "$i"; done
say "started node-1..4 (${release[1]}, ${release[2]}, ${release[3]}, ${release[4]}): pids ${pids[*]:1}"

# `swimd members --format json` of observer $1, as one member per line, tab-separated (a
# reason or a release may hold spaces): name state incarnation maintenance software-release (null: not in maintenance, not advertised, or
# not known to that release).
members() {
    "${bin[$1]}" members --api "$(api "$1")" --format json 2> /dev/null |
        jq -r '.members[] | "\(.name)\t\(.state)\t\(.incarnation)\t\(.maintenance // null | tojson)\t\(.software.release // null | tojson)"' ||
        true
}
field() { members "$1" | awk -F '\t' -v n="$2" -v f="$3" '$1 == n { print $f }'; }
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

all_alive() {
    local o s
    for o in "$@"; do
        for s in "$@"; do
            [ "$(field "$o" "node-$s" 2)" = alive ] || return 1
        done
    done
}

t0=$(now)
until all_alive 1 2 3 4; do
    if [ "$(since "$t0" | cut -d. -f1)" -ge 30 ]; then
        fail "not all four saw all four alive within 30 s"
        break
    fi
    sleep 0.1
done
[ ${#failures[@]} -eq 0 ] && say "converged: all four see all four alive after $(since "$t0") s"

# --- maintenance across versions -----------------------------------------------------------
# Every check is made and reported; only the crash measurements need a converged cluster.
converged=$([ ${#failures[@]} -eq 0 ] && echo true || echo false)
if $converged; then
    before=$(field 3 node-3 3)
    "${bin[3]}" maint on --reason upgrade --api "$(api 3)" > /dev/null
    t0=$(now)
    until [ "$(field 3 node-3 4)" = '"upgrade"' ] && [ "$(field 4 node-3 4)" = '"upgrade"' ]; do
        if [ "$(since "$t0" | cut -d. -f1)" -ge 10 ]; then
            fail "the new agents did not both list node-3 in maintenance within 10 s: node-3 lists $(members 3 | awk '$1 == "node-3"'), node-4 lists $(members 4 | awk '$1 == "node-3"')"
            break
        fi
        sleep 0.05
    done
    [ ${#failures[@]} -eq 0 ] && say "maint on: node-3 (new) listed in maintenance by node-3 and node-4 after $(since "$t0") s"
    declare -A first last
    for o in 1 2 3 4; do first[$o]=$(field "$o" node-3 3); done
    say "node-3's incarnation: $before before maint on; after, on node-1..4: ${first[1]} ${first[2]} ${first[3]} ${first[4]}"
    watch_start=$(now)
    declare -A wrong=()
    while [ "$(since "$watch_start" | cut -d. -f1)" -lt "$maint_watch" ]; do
        for o in 1 2 3 4; do
            IFS=$'\t' read -r _ state incarnation reason _ <<< "$(members "$o" | awk '$1 == "node-3"')"
            last[$o]=${incarnation:-0}
            if [ "$state" != alive ]; then
                wrong[$o]="listed node-3 ${state:-as nothing}"
            elif [ "${release[$o]}" = new ] && [ "$reason" != '"upgrade"' ]; then
                wrong[$o]="listed node-3 without its maintenance ($reason)"
            elif [ "${release[$o]}" = old ] && [ "$reason" != null ]; then
                wrong[$o]="listed a maintenance it cannot know ($reason)"
            fi
        done
        sleep 0.5
    done
    for o in "${!wrong[@]}"; do fail "during the ${maint_watch} s after maint on, node-$o (${release[$o]}) ${wrong[$o]}"; done
    rises=""
    for o in 1 2 3 4; do
        rises+=" node-$o ${first[$o]}->${last[$o]},"
        if [ $((last[$o] - first[$o])) -gt 2 ]; then
            fail "node-3's incarnation rose by $((last[$o] - first[$o])) in ${maint_watch} s on node-$o: a refutation storm"
        fi
    done
    say "${maint_watch} s after maint on: node-3's incarnation${rises%,}"
fi

# --- software advertisements (reported, not judged) ------------------------------------------
# Releases after v0.1.0 advertise their software in their alive claims (`swimd members
# --detailed`); an old agent relays those claims without it.
if $converged; then
    for o in 1 2 3 4; do
        seen=$(members "$o" | awk -F '\t' '{ printf " %s=%s", $1, $5 }')
        say "software as node-$o (${release[$o]}) lists it:$seen"
        if [ "${release[$o]}" = new ]; then
            for s in 3 4; do
                if [ "$(field "$o" "node-$s" 5)" = null ]; then
                    warnings+=("node-$o (new) lists no software for node-$s (new)")
                fi
            done
        fi
    done
fi

# --- crashes -------------------------------------------------------------------------------
# SIGKILLs node $1 and waits until every survivor lists it failed; prints the times.
crash() {
    local victim=$1 survivors=() o pending t0 line
    shift
    survivors=("$@")
    t0=$(now)
    kill -KILL "${pids[$victim]}"
    wait "${pids[$victim]}" 2> /dev/null || true
    pids[victim]=0
    declare -A seen=()
    pending=${#survivors[@]}
    while [ "$pending" -gt 0 ]; do
        for o in "${survivors[@]}"; do
            [ -n "${seen[$o]:-}" ] && continue
            if [ "$(field "$o" "node-$victim" 2)" = failed ]; then
                seen[$o]=$(since "$t0")
                pending=$((pending - 1))
            fi
        done
        if [ "$(since "$t0" | cut -d. -f1)" -ge 30 ]; then
            fail "node-$victim (${release[$victim]}) SIGKILLed: not failed everywhere within 30 s"
            break
        fi
    done
    line=""
    for o in "${survivors[@]}"; do line+=" node-$o (${release[$o]}) ${seen[$o]:-never} s,"; done
    say "node-$victim (${release[$victim]}) SIGKILLed: listed failed by${line%,}"
    local slowest
    slowest=$(for o in "${survivors[@]}"; do echo "${seen[$o]:-inf}"; done | sort -g | tail -1)
    say "node-$victim (${release[$victim]}) failed everywhere after $slowest s"
}

if $converged; then
    crash 2 1 3 4
    crash 4 1 3
fi

echo
for w in "${warnings[@]}"; do echo "WARNING: $w"; done
if [ ${#failures[@]} -eq 0 ]; then
    echo "PASS: $old_tag and this checkout interoperate (see above)"
    exit 0
fi
echo "FAIL:"
printf '  %s\n' "${failures[@]}"
for i in 1 2 3 4; do
    echo "--- node-$i (${release[$i]}) log, last lines:"
    tail -n 15 "$work/node-$i.log" 2> /dev/null | sed 's/\x1b\[[0-9;]*m//g' || true
done
exit 1
