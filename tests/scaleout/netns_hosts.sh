# shellcheck shell=bash
# Helper library for the scale-out tests (sourced, not run): every "host" is a network namespace
# with one veth on a private bridge, which lives in a namespace of its own (the "switch"), so
# nothing is ever added to the machine's own network namespace. Addresses come from
# 198.18.0.0/15 only (RFC 2544 benchmarking range, never routed); traffic goes only to them.
#
#   so_init TAG SUBNET        # e.g. so_init dns 198.18.1: names so<TAG><pid>-<host>, /24 SUBNET.0
#   so_add_host NAME OCTET    # namespace + veth + SUBNET.OCTET/24 (lo up); prints nothing
#   so_ns NAME                # the namespace name of host NAME
#   so_start NAME LOG CMD...  # runs CMD inside host NAME in the background; its pid in SO_PID
#   so_wait SECONDS CMD...    # polls CMD (every 0.1 s) until it succeeds; 1 after SECONDS
#   so_cleanup                # kills what so_start started, deletes every namespace and
#                             # /etc/netns/<ns>, and the work directory (kept with SO_KEEP=1);
#                             # installed as the EXIT trap by so_init
#   so_skip REASON            # exit 77 (skipped) or, with SPARKLE_REQUIRE_NETNS=1, exit 1
#   so_require_netns          # skips unless this machine can make namespaces (root, ip, netns)
#
# Names: namespaces "so<tag><pid>-<host>", the bridge "br<pid>", veths "v<host><pid>" (<= 15
# characters for pids up to 7 digits and host names up to 4 characters), so that two tests (and
# two runs) never collide; each test uses its own /24.

SO_NAMESPACES=()
SO_PIDS=()
SO_PID=""
SO_WORK=""
SO_PREFIX=""
SO_SUBNET=""

so_skip() {
  if [ "${SPARKLE_REQUIRE_NETNS:-}" = 1 ]; then
    echo "FAIL: $* (SPARKLE_REQUIRE_NETNS=1: scripts/setup.sh installs iproute2, dnsmasq-base, nginx; CI runs as root)"
    exit 1
  fi
  echo "SKIP: $*"
  exit 77
}

so_require_netns() {
  [ "$(id -u)" -eq 0 ] || so_skip "network namespaces need root (CAP_NET_ADMIN); running as uid $(id -u)"
  command -v ip >/dev/null || so_skip "ip (iproute2) is not installed"
  local probe="soprobe$$"
  ip netns add "$probe" 2>/dev/null || so_skip "cannot create a network namespace (ip netns add: no CAP_NET_ADMIN?)"
  ip netns del "$probe"
}

so_ns() { echo "${SO_PREFIX}-$1"; }

so_cleanup() {
  local rc=$?
  set +e
  local pid
  for pid in "${SO_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for pid in "${SO_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  local ns
  for ns in "${SO_NAMESPACES[@]}"; do
    # Anything still running inside our own namespaces was started by this test.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
    rm -rf "/etc/netns/$ns"
  done
  if [ -n "${SO_KEEP:-}" ]; then
    echo "SO_KEEP: logs kept in $SO_WORK"
  elif [ -n "$SO_WORK" ]; then
    rm -rf "$SO_WORK"
  fi
  return $rc
}

# Namespaces "so<TAG><pid>-*" left by an earlier run of the same test whose shell is gone (killed
# with SIGKILL, e.g. by a ctest timeout, so that its EXIT trap never ran): their processes are
# killed and the namespaces deleted.
so_remove_stale() {
  local tag=$1 ns pid owner
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^so${tag}[0-9]+-" || true); do
    owner=${ns#so"$tag"}
    owner=${owner%%-*}
    kill -0 "$owner" 2>/dev/null && continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
    rm -rf "/etc/netns/$ns"
    echo "removed the stale namespace $ns (its test, pid $owner, is gone)"
  done
}

# so_init TAG SUBNET (three octets, e.g. 198.18.1)
so_init() {
  so_remove_stale "$1"
  SO_PREFIX="so$1$$"
  SO_SUBNET=$2
  case "$SO_SUBNET" in
    198.18.*|198.19.*) ;;
    *) echo "FAIL: subnet $SO_SUBNET is outside 198.18.0.0/15"; exit 1 ;;
  esac
  trap so_cleanup EXIT
  trap 'exit 130' INT TERM
  SO_WORK=$(mktemp -d "${PWD}/scaleout_$1.XXXXXX")
  local sw
  sw=$(so_ns sw)
  ip netns add "$sw"
  SO_NAMESPACES+=("$sw")
  ip -n "$sw" link add "br$$" type bridge
  ip -n "$sw" link set "br$$" up
}

# so_add_host NAME OCTET
so_add_host() {
  local name=$1 octet=$2
  local ns sw
  ns=$(so_ns "$name")
  sw=$(so_ns sw)
  ip netns add "$ns"
  SO_NAMESPACES+=("$ns")
  ip -n "$sw" link add "v$name$$" type veth peer name eth0 netns "$ns"
  ip -n "$sw" link set "v$name$$" master "br$$" up
  ip -n "$ns" addr add "$SO_SUBNET.$octet/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

# so_start NAME LOG CMD...: `ip netns exec` execs CMD, so SO_PID is CMD's own pid.
so_start() {
  local name=$1 log=$2
  shift 2
  ip netns exec "$(so_ns "$name")" "$@" >"$log" 2>&1 &
  SO_PID=$!
  SO_PIDS+=("$SO_PID")
}

# so_wait SECONDS CMD...
so_wait() {
  local seconds=$1
  shift
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.1
  done
}

# so_in NAME CMD...: runs CMD inside host NAME in the foreground.
so_in() {
  local name=$1
  shift
  ip netns exec "$(so_ns "$name")" "$@"
}

so_fail() {
  echo "FAIL: $*"
  local log
  for log in "$SO_WORK"/*.log; do
    [ -e "$log" ] || continue
    echo "---- $log"
    tail -n 25 "$log"
  done
  exit 1
}
