#!/usr/bin/env bash
# bpfman demo: plan, apply, list, re-plan (no changes), live counters, a watcher picking up an
# edit, destroy.
#
# Everything happens in throwaway places so the host is never touched:
#   - a network namespace bpfman-demo-$$ whose eth0 is one end of a veth pair (the other end,
#     peer0, lives in a second namespace), so the examples' "eth0" is the demo's own interface;
#   - a bpffs root /sys/fs/bpf/bpfman-demo-$$ and a state dir from mktemp.
# bpfman runs inside the namespace through nsenter --net, not `ip netns exec`, which remounts /sys
# and would hide the bpffs pins. The tracepoint and uprobe examples are host-wide by nature: they
# count openat(2) and malloc calls of the whole host while the demo runs, and are removed with the
# rest. An EXIT trap removes whatever was created, also when a step fails.
#
# Environment: BPFMAN (default .venv/bin/bpfman), PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

if [ "$(id -u)" != 0 ]; then
    echo "demo.sh: must run as root (it loads eBPF programs and creates network namespaces)" >&2
    exit 1
fi

BPFMAN=${BPFMAN:-$REPO/.venv/bin/bpfman}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
EXAMPLES=manifests/examples
NS=bpfman-demo-$$
PEER_NS=bpfman-demo-peer-$$
ROOT=/sys/fs/bpf/bpfman-demo-$$
STATE=
FRAMES=20

[ -x "$BPFMAN" ] || { echo "demo.sh: $BPFMAN not found; run 'make install' first" >&2; exit 1; }
[ -x "$PYTHON" ] || PYTHON=$(command -v python3)
for obj in "$EXAMPLES"/bytecode/*.bpf.c; do
    [ -f "${obj%.bpf.c}.o" ] || { echo "demo.sh: ${obj%.bpf.c}.o missing; run 'make bytecode'" >&2; exit 1; }
done

bold() { if [ -t 1 ]; then printf '\n\033[1m==> %s\033[0m\n' "$*"; else printf '\n==> %s\n' "$*"; fi; }
in_ns() { nsenter --net="/run/netns/$1" -- "${@:2}"; }
bpfman() { in_ns "$NS" "$BPFMAN" --bpffs-root "$ROOT" --state-dir "$STATE" "$@"; }

applied=0
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ -n "${WATCH_PID:-}" ]; then
        kill -TERM "$WATCH_PID" 2>/dev/null && wait "$WATCH_PID" 2>/dev/null
    fi
    [ -n "${WATCHED:-}" ] && rm -rf "$WATCHED"
    if [ "$applied" = 1 ]; then
        # Normally already done by the last step; after a failure this is the orderly way out.
        bpfman destroy --auto-approve >/dev/null 2>&1
    fi
    # Unpinning whatever destroy left drops the last references: links detach, programs go.
    [ -e "$ROOT" ] && rm -rf "$ROOT"
    # Deleting the namespaces deletes the veth pair and anything still attached to it.
    ip netns del "$NS" 2>/dev/null
    ip netns del "$PEER_NS" 2>/dev/null
    [ -n "$STATE" ] && rm -rf "$STATE"
    if [ "$rc" != 0 ]; then
        echo "demo.sh: failed (exit $rc); everything the demo created has been removed" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

STATE=$(mktemp -d /tmp/bpfman-demo-state.XXXXXX)

bold "Setting up namespace $NS: eth0 (192.0.2.1/24) <-> peer0 (192.0.2.2/24) in $PEER_NS"
ip netns add "$NS"
ip netns add "$PEER_NS"
# Temporary names unique to this run, so two demos (or a test) never race for the same name.
ip link add "dmo$$a" type veth peer name "dmo$$b"
ip link set "dmo$$a" netns "$NS"
ip link set "dmo$$b" netns "$PEER_NS"
for side in "$NS dmo$$a eth0 192.0.2.1/24" "$PEER_NS dmo$$b peer0 192.0.2.2/24"; do
    read -r ns tmp name addr <<<"$side"
    # No IPv6 autoconfiguration chatter: the counters should see the demo's traffic only.
    in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set "$tmp" name "$name"
    ip -n "$ns" addr add "$addr" dev "$name"
    ip -n "$ns" link set "$name" up
    ip -n "$ns" link set lo up
done
echo "bpffs root: $ROOT"
echo "state dir:  $STATE"

bold "bpfman plan $EXAMPLES"
bpfman plan "$EXAMPLES"

bold "bpfman apply $EXAMPLES --auto-approve"
applied=1
bpfman apply "$EXAMPLES" --auto-approve

bold "bpfman list"
bpfman list

bold "bpfman plan $EXAMPLES (again: the kernel already matches the manifests)"
replan=$(bpfman plan "$EXAMPLES")
printf '%s\n' "$replan"
if ! grep -q "No changes" <<<"$replan"; then
    echo "demo.sh: the second plan should have said 'No changes'" >&2
    exit 1
fi

bold "Sending $FRAMES UDP datagrams peer0 -> eth0, opening files and calling malloc"
# UDP to a closed port needs no listener and no ping binary; the first one also makes ARP run.
in_ns "$PEER_NS" "$PYTHON" - "$FRAMES" <<'EOF'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[1])):
    s.sendto(b"bpfman-demo %d" % i, ("192.0.2.1", 9))
    time.sleep(0.01)
EOF
# Each command opens files (openat) and allocates (malloc) in a fresh process.
for _ in 1 2 3; do cat /etc/hostname /etc/os-release >/dev/null; ls / >/dev/null; done

bold "Live counters, read from the pinned maps with bpftool (per-CPU values summed)"
# The index part of a pin path depends on the kind, so find the maps rather than spell them out.
show_counter() {
    local label=$1 dir=$2 map=$3 path
    path=$(find "$ROOT/$dir" -path "*/maps/$map" 2>/dev/null | head -n1)
    if [ -z "$path" ]; then
        printf '%-20s no pinned map %s under %s\n' "$label" "$map" "$ROOT/$dir"
        return 1
    fi
    printf '%-20s %s\n' "$label" "$(bpftool -j map dump pinned "$path" | "$PYTHON" -c '
import json, sys

def total(values):
    """Add up per-CPU values: u64 counters, or structs of u64 counters."""
    out = None
    for v in values:
        v = v["value"]
        if isinstance(v, list):  # no BTF: raw little-endian bytes, read as u64 fields
            raw = bytes(int(b, 16) for b in v)
            v = {f"u64[{i // 8}]": int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8)}
        if isinstance(v, dict):
            out = dict.fromkeys(v, 0) if out is None else out
            for k, n in v.items():
                out[k] += int(n)
        else:
            out = (out or 0) + int(v)
    return out

for entry in json.load(sys.stdin):
    entry = entry.get("formatted", entry)
    t = total(entry.get("values", [{"value": entry.get("value")}]))
    print(" ".join(f"{k}={n}" for k, n in t.items()) if isinstance(t, dict) else f"hits={t}")
')"
    echo "    ($path)"
}
show_counter "XDP on eth0:" XdpProgram/xdp-counter xdp_stats_map
show_counter "tcx ingress eth0:" TcxProgram/tcx-counter tcx_stats_map
show_counter "openat(2) calls:" TracepointProgram/tracepoint-counter tp_hits_map
show_counter "malloc() calls:" UprobeProgram/uprobe-counter uprobe_hits_map

bold "bpfman watch: a copy of the examples, kept converged while we edit it"
WATCHED=$(mktemp -d /tmp/bpfman-demo-watched.XXXXXX)
cp -r "$EXAMPLES"/. "$WATCHED"/
WATCH_LOG="$STATE/watch.log"
# exec: $! must be the watcher itself (nsenter execs bpfman), not a subshell around it.
(exec nsenter --net="/run/netns/$NS" -- "$BPFMAN" --bpffs-root "$ROOT" --state-dir "$STATE" \
    watch --interval 60 "$WATCHED" >"$WATCH_LOG" 2>&1) &
WATCH_PID=$!
wait_for() {  # wait_for PATTERN: until the watcher's log has it (at most 30 s)
    for _ in $(seq 300); do
        grep -q -- "$1" "$WATCH_LOG" && return 0
        kill -0 "$WATCH_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "demo.sh: the watcher never logged '$1':" >&2
    cat "$WATCH_LOG" >&2
    return 1
}
wait_for "reconcile result=no-changes reason=start"
echo "The watcher started, found the kernel already converged. Now an edit (saved by rename):"
echo "  tracepoint-counter also counts openat2(2)"
sed 's|    - syscalls/sys_enter_openat$|    - syscalls/sys_enter_openat\n    - syscalls/sys_enter_openat2|' \
    "$WATCHED/tracepoint/tracepoint-counter.yaml" >"$WATCHED/tracepoint/.edit"
mv "$WATCHED/tracepoint/.edit" "$WATCHED/tracepoint/tracepoint-counter.yaml"
wait_for "reconcile result=applied"
sed -n '2,$p' "$WATCH_LOG"
bold "bpfman status"
bpfman status
kill -TERM "$WATCH_PID"
wait "$WATCH_PID" || true
WATCH_PID=
rm -rf "$WATCHED"
echo "The watcher stopped (SIGTERM) and unloaded nothing."

bold "bpfman destroy --auto-approve"
bpfman destroy --auto-approve
applied=0
left=$(find "$ROOT" -mindepth 1 -not -type d 2>/dev/null | wc -l)
if [ "$left" != 0 ]; then
    echo "demo.sh: destroy left $left pins under $ROOT" >&2
    exit 1
fi

bold "Done: the namespaces, $ROOT and $STATE are removed on exit"
