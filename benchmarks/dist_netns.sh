#!/usr/bin/env bash
# Two network namespaces as two "nodes", joined by a veth pair whose bandwidth tc's tbf limits.
#   bash benchmarks/dist_netns.sh up [RATE_MBIT]   create akdistA (10.77.0.1) and akdistB (10.77.0.2)
#   bash benchmarks/dist_netns.sh rate RATE_MBIT   change the limit, both directions
#   bash benchmarks/dist_netns.sh down             delete both namespaces (and the veth pair)
# Needs root. Traffic stays on the veth pair inside the two namespaces made here.
set -euo pipefail
A=akdistA B=akdistB IFA=akdA IFB=akdB

shape() {  # shape NS IF RATE_MBIT: token bucket at RATE, bucket >= 10 ms of traffic
  local burst=$(( $3 * 1000000 / 8 / 100 ))
  (( burst < 65536 )) && burst=65536
  ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "${3}mbit" burst "$burst" limit $(( 4 * burst ))
}

case "${1:-}" in
  up)
    rate="${2:-200}"
    ip netns add "$A"; ip netns add "$B"
    ip link add "$IFA" type veth peer name "$IFB"
    ip link set "$IFA" netns "$A"; ip link set "$IFB" netns "$B"
    ip -n "$A" addr add 10.77.0.1/24 dev "$IFA"; ip -n "$B" addr add 10.77.0.2/24 dev "$IFB"
    for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
    ip -n "$A" link set "$IFA" up; ip -n "$B" link set "$IFB" up
    shape "$A" "$IFA" "$rate"; shape "$B" "$IFB" "$rate"
    ;;
  rate)
    shape "$A" "$IFA" "$2"; shape "$B" "$IFB" "$2"
    ;;
  down)
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    ;;
  *)
    echo "usage: $0 up [RATE_MBIT] | rate RATE_MBIT | down" >&2; exit 2
    ;;
esac
