#!/bin/bash
# Regenerates tools/symbol-order.txt: the functions a running agent executes, which the
# linker places first in the binary (build.rs), so the code an agent maps is contiguous.
# Run it after large changes or a toolchain or dependency update (symbol names carry a hash
# of the crate's build settings; names that no longer exist are skipped by the linker and
# the layout quietly degrades towards the default one). Needs valgrind, perf and python3.
#
# It builds the dist profile, starts 50 agents on 127.0.78.x, runs three under callgrind
# (node-7 as configured by most hosts: gossip, API and metrics, no hooks or checks; the seed,
# node-1, with a cluster-scoped webhook; node-5 with a webhook, an exec hook, checks and the
# HAProxy agent listener), and drives them through joins, a crash and recovery, a leave and
# rejoin, API, event-stream and metrics requests, a reload and their own leaves; runs 50
# native agents under `perf record` for their page faults; then runs `swimd demo` with its
# agents under callgrind. Takes about four minutes after the build.
#
# The order has tiers: what node-7 ran and what native agents faulted on first (every agent
# runs it), then the CPU-specific variants, then what only hooks, checks and the demo run.
# An agent without hooks then maps a prefix of ~1.8 MB instead of every function any
# configuration may run (~2.4 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind perf python3; do
    command -v "$tool" > /dev/null || { echo "symbol-order: needs $tool" >&2; exit 1; }
done
# The very build that ships: symbol names hash the profile, so any other profile's names
# would not match (the dist profile keeps its symbol table for this reason).
target=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --profile dist --locked
bin="$target/dist/swimd"
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
    wait 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bin" tls init --dir "$work/tls" > /dev/null
for i in $(seq 1 50); do
    "$bin" tls issue "node-$i" --dir "$work/tls" --ip "127.0.78.$i" > /dev/null
    cat > "$work/node-$i.toml" << EOF
[node]
name = "node-$i"
cluster = "profile"
[gossip]
bind = "127.0.78.$i:7946"
seeds = ["127.0.78.1:7946"]
[tls]
ca = "tls/ca.pem"
cert = "tls/node-$i.pem"
key = "tls/node-$i-key.pem"
[api]
listen = "127.0.78.$i:7947"
[metrics]
listen = "127.0.78.$i:9946"
[state]
dir = "state/node-$i"
EOF
done
# node-1, the seed, answers every join and fires a cluster-scoped hook (as `swimd demo` does).
cat >> "$work/node-1.toml" << 'EOF'
[[hooks]]
name = "lb"
kind = "webhook"
scope = "cluster"
events = ["member.failed", "member.recovered"]
url = "http://127.0.78.100:8080/hook"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
EOF
cat >> "$work/node-5.toml" << 'EOF'
[haproxy_agent]
listen = "127.0.78.5:7948"
[[hooks]]
name = "lb"
kind = "webhook"
events = ["member.failed", "member.recovered", "member.joined", "member.left"]
url = "http://127.0.78.100:8080/hook"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
hold_down = "1s"
[[hooks]]
name = "log"
kind = "exec"
events = ["member.failed", "member.recovered"]
command = ["/bin/true"]
[[checks]]
name = "api"
kind = "http"
url = "http://127.0.78.5:7947/v1/self"
interval = "2s"
[[checks]]
name = "metrics"
kind = "tcp"
address = "127.0.78.5:9946"
interval = "2s"
[[checks]]
name = "true"
kind = "exec"
command = ["/bin/true"]
interval = "2s"
EOF

python3 - > /dev/null 2>&1 << 'EOF' &
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.end_headers()
http.server.HTTPServer(("127.0.78.100", 8080), H).serve_forever()
EOF
pids+=($!)

get() { python3 -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5).read()" "$1" || true; }
agent() { (cd "$work" && exec "$bin" agent --config "node-$1.toml" > "$work/node-$1.log" 2>&1) & }
declare -A agents
profile() {
    (cd "$work" && exec valgrind --tool=callgrind --demangle=no --compress-strings=no \
        --callgrind-out-file="$work/callgrind-$1.out" "$bin" agent --config "node-$1.toml" \
        > "$work/node-$1.log" 2>&1) &
}
profile 1; seed=$!; pids+=($seed)
sleep 5
for i in 2 3 4 6 $(seq 8 50); do agent "$i"; agents[$i]=$!; pids+=($!); done
profile 5; profiled=$!; pids+=($profiled)
profile 7; plain=$!; pids+=($plain)
# A client following node-7's event stream (as dashboards and the test lab do).
python3 -c "import urllib.request; r=urllib.request.urlopen('http://127.0.78.7:7947/v1/events', timeout=120); [None for _ in r]" \
    > /dev/null 2>&1 &
pids+=($!)

sleep 25
for node in 5 7; do
    for path in /v1/members /v1/self /v1/health "/v1/members?state=alive"; do get "http://127.0.78.$node:7947$path"; done
    get "http://127.0.78.$node:9946/metrics"
done
python3 -c "import socket; s=socket.create_connection(('127.0.78.5',7948)); s.sendall(b'node-1\n'); s.recv(64)" || true
kill -KILL "${agents[2]}"
sleep 15
agent 2; agents[2]=$!; pids+=($!)
sleep 15
kill -TERM "${agents[3]}"
sleep 5
agent 3; agents[3]=$!; pids+=($!)
sleep 15
kill -HUP "$profiled" 2> /dev/null || true
kill -HUP "$plain" 2> /dev/null || true
for node in 5 7; do
    get "http://127.0.78.$node:9946/metrics"
    get "http://127.0.78.$node:7947/v1/members"
done
sleep 5
kill -TERM "$profiled" "$plain"
wait "$profiled" || true
wait "$plain" || true
kill -TERM "$seed"
wait "$seed" || true
for i in "${!agents[@]}"; do kill -TERM "${agents[$i]}" 2> /dev/null || true; done
for i in "${!agents[@]}"; do wait "${agents[$i]}" 2> /dev/null || true; done

# Native agents run what valgrind's slow, ADX-less CPU never makes them run: key updates,
# loss recovery, the CPU's own crypto variants. The first instruction fetched in each
# 64 KB window of the binary faults; those functions join the plain agent's tier.
cat > "$work/native.sh" << EOF
cd "$work"
for i in \$(seq 1 50); do "$bin" agent --config node-\$i.toml > node-\$i.log 2>&1 & done
sleep 60
kill -KILL %7; sleep 1
"$bin" agent --config node-7.toml > node-7.log 2>&1 &
sleep 20
kill -TERM \$(jobs -p); wait
EOF
perf record -q -e page-faults -c 1 -d -o "$work/native.data" -- bash "$work/native.sh"
perf script -i "$work/native.data" -F pid,addr,ip,sym,dso --no-demangle > "$work/native.txt" 2> /dev/null

# `swimd demo` adds what its agents do: event streams, a restart after SIGKILL (the state
# store recovers its file) and failover of a cluster-scoped hook. Only its agents count,
# not the demo's own process.
valgrind --tool=callgrind --trace-children=yes --demangle=no --compress-strings=no \
    --callgrind-out-file="$work/demo-%p.out" "$bin" demo > "$work/demo.log" 2>&1

python3 - "$bin" "$work/callgrind-7.out" "$work/native.txt" "$work"/callgrind-[15].out "$work"/demo-*.out \
    > "$work/order.txt" << 'EOF'
import collections, re, subprocess, sys


def self_cost(path):
    """Self cost per function of one agent's profile (None for a non-agent process); a
    "calls=" line is followed by the call's inclusive cost."""
    cost = collections.Counter()
    lines = open(path).read().splitlines()
    if not any(l.startswith("cmd:") and " agent " in l for l in lines[:20]):
        return None
    current, skip = None, False
    for line in lines:
        if line.startswith("fn="):
            current = line[3:].strip().split("'")[0]
            cost[current] += 0
        elif line.startswith("calls="):
            skip = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            if skip:
                skip = False
            elif current:
                fields = line.split()
                if len(fields) > 1 and fields[1].isdigit():
                    cost[current] += int(fields[1])
    return cost


ours = set()
for line in subprocess.run(["nm", "--defined-only", sys.argv[1]], capture_output=True, text=True).stdout.splitlines():
    fields = line.split()
    if len(fields) == 3 and fields[1] in "tTwW":
        ours.add(fields[2])
placed = set()


def place(names):
    for name in names:
        if name in ours and name not in placed:
            placed.add(name)
            print(name)


def by_cost(cost):
    return [name for name, _ in sorted(cost.items(), key=lambda kv: (-kv[1], kv[0]))]


# Tier 1: the plain agent, hottest first, then what native agents fault on first.
plain = self_cost(sys.argv[2])
if not plain:
    sys.exit("symbol-order: no callgrind profile of the plain agent (node-7)")
place(by_cost(plain))
native = []
for line in open(sys.argv[3]):
    fields = line.split()
    # pid, the faulting address, then the instruction pointer: equal for a code fetch.
    if len(fields) > 3 and fields[1] in fields[2:-1] and sys.argv[1] in line:
        at = fields.index(fields[1], 2)
        native.append(fields[at + 1])
place(native)
# Tier 2: ring and sha2 pick their AES-GCM, SHA-256 and curve code by CPU feature at run
# time, and valgrind's virtual CPU lacks some (ADX, SHA, VAES): every variant, the fiat
# helpers only the native path calls, and the C runtime's start-up code (found by recording
# the page faults of native agents with `perf record -e page-faults -d`).
variants = re.compile(
    r"_adx|_hw$|vaes|vpclmulqdq|ring4aead7aes_gcm|ring4aead3gcm16Context|x86_sha"
    r"|^fe4_|^fiat_|^inline_x25519_|constant_time_conditional_mem|^_start$|^_init$|^frame_dummy$"
)
place(sorted(name for name in ours if variants.search(name)))
# Tier 3: what hooks, checks, the HAProxy agent listener and the demo add.
rest = collections.Counter()
for path in sys.argv[4:]:
    rest.update(self_cost(path) or {})
place(by_cost(rest))
EOF
# Replaced only whole: a run that fails part-way leaves the old list.
mv "$work/order.txt" tools/symbol-order.txt
echo "tools/symbol-order.txt: $(wc -l < tools/symbol-order.txt) functions" >&2
