"""nftables rulesets for network faults, as text for ``nft -f -``.

One table per fault, ``inet drills_<faultid>``, so a heal deletes exactly its
own table and never another fault's (or the host's own firewall).  Drops, never
rejects: a dead host is silent, and a peer that gets RST/ICMP errors fails fast
in a way a real outage does not.

The kernel the harness is developed on has no ``sch_netem``, so packet loss is
done with ``numgen random mod 100 < N drop``; ``netem_supported`` says whether
``tc qdisc ... netem`` (delay) can be used on a given host.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, Sequence

TABLE_PREFIX = "drills_"
FAMILY = "inet"
# Before the usual filter chains (priority 0): a drop in any base chain is final anyway,
# running first just keeps counters honest.
PRIORITY = -10


def table_name(fault_id: str) -> str:
    """``drills_<faultid>`` with the id reduced to characters nft accepts in a name."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", fault_id)
    if not clean:
        raise ValueError("fault id is empty")
    return TABLE_PREFIX + clean


def _split_peers(peers: Sequence[str]) -> tuple[list[str], list[str]]:
    v4: list[str] = []
    v6: list[str] = []
    for p in peers:
        net = ipaddress.ip_network(p.strip(), strict=False)  # raises ValueError on a name
        (v4 if net.version == 4 else v6).append(str(net) if net.num_addresses > 1 else str(net.network_address))
    return sorted(set(v4)), sorted(set(v6))


def _exemptions(keep_tcp_ports: Sequence[int], direction: str) -> list[str]:
    """Rules that keep the harness's own management channel (e.g. SSH) open."""
    port_field = "dport" if direction == "input" else "sport"
    return [f"tcp {port_field} {int(p)} accept" for p in sorted(set(keep_tcp_ports))]


def _iface_match(interfaces: Sequence[str], direction: str) -> str:
    """Restrict rules to the cluster-facing links; empty = every link but loopback."""
    if not interfaces:
        return ""
    key = "iifname" if direction == "input" else "oifname"
    names = ", ".join(f'"{i}"' for i in interfaces)
    return f"{key} {{ {names} }} "


def _table(name: str, chains: dict[str, list[str]], sets: Sequence[str] = ()) -> str:
    # "add table" + "delete table" + definition in one transaction: a leftover table of
    # the same name (an earlier, half-finished inject) is replaced atomically.
    lines = [f"table {FAMILY} {name} {{}}", f"delete table {FAMILY} {name}", f"table {FAMILY} {name} {{"]
    lines += [f"    {s}" for s in sets]
    for chain, rules in chains.items():
        lines.append(f"    chain {chain} {{")
        lines.append(f"        type filter hook {chain} priority {PRIORITY}; policy accept;")
        lines += [f"        {r}" for r in rules]
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def blackhole_ruleset(
    fault_id: str, *, interfaces: Sequence[str] = (), keep_tcp_ports: Sequence[int] = ()
) -> str:
    """Drop everything in and out except loopback (and the kept management ports)."""
    chains: dict[str, list[str]] = {}
    for direction in ("input", "output"):
        lo = 'iif "lo" accept' if direction == "input" else 'oif "lo" accept'
        rules = [lo, *_exemptions(keep_tcp_ports, direction)]
        rules.append(f"{_iface_match(interfaces, direction)}counter drop")
        chains[direction] = rules
    return _table(table_name(fault_id), chains)


def partition_ruleset(
    fault_id: str, peers: Sequence[str], *, keep_tcp_ports: Sequence[int] = ()
) -> str:
    """Drop traffic to and from ``peers`` (addresses or CIDRs), both directions."""
    v4, v6 = _split_peers(peers)
    if not v4 and not v6:
        raise ValueError("a partition needs at least one peer address")
    sets: list[str] = []
    if v4:
        sets.append(f"set peers4 {{ type ipv4_addr; flags interval; elements = {{ {', '.join(v4)} }}; }}")
    if v6:
        sets.append(f"set peers6 {{ type ipv6_addr; flags interval; elements = {{ {', '.join(v6)} }}; }}")
    chains: dict[str, list[str]] = {}
    for direction, field in (("input", "saddr"), ("output", "daddr")):
        rules = _exemptions(keep_tcp_ports, direction)
        if v4:
            rules.append(f"ip {field} @peers4 counter drop")
        if v6:
            rules.append(f"ip6 {field} @peers6 counter drop")
        chains[direction] = rules
    return _table(table_name(fault_id), chains, sets)


def packet_loss_ruleset(
    fault_id: str, percent: int, *, interfaces: Sequence[str] = (), keep_tcp_ports: Sequence[int] = ()
) -> str:
    """Drop ``percent`` % of packets at random, in each direction, loopback spared."""
    if not 0 < int(percent) <= 100:
        raise ValueError(f"packet loss percent must be 1..100, got {percent}")
    chains: dict[str, list[str]] = {}
    for direction in ("input", "output"):
        lo = 'iif "lo" accept' if direction == "input" else 'oif "lo" accept'
        rules = [lo, *_exemptions(keep_tcp_ports, direction)]
        rules.append(f"{_iface_match(interfaces, direction)}numgen random mod 100 < {int(percent)} counter drop")
        chains[direction] = rules
    return _table(table_name(fault_id), chains)


def delete_ruleset(fault_id: str) -> str:
    """Remove the fault's table; idempotent (adding an existing table is a no-op)."""
    name = table_name(fault_id)
    return f"table {FAMILY} {name} {{}}\ndelete table {FAMILY} {name}\n"


def list_drill_tables(nft_list_tables_output: str) -> list[str]:
    """Names of drills_ tables in ``nft list tables`` output (for `drill heal` reports)."""
    return re.findall(rf"^table {FAMILY} ({TABLE_PREFIX}\w+)$", nft_list_tables_output, re.M)


# netem: detection only.  A probe on a throwaway dummy link, so nothing real is touched.
NETEM_PROBE = (
    "ip link add drillsnetem0 type dummy 2>/dev/null && "
    "tc qdisc add dev drillsnetem0 root netem delay 1ms 2>/dev/null; rc=$?; "
    "ip link del drillsnetem0 2>/dev/null; exit $rc"
)


def netem_supported(run: Callable[[str], int]) -> bool:
    """True if ``tc qdisc add ... netem`` works where ``run`` (a shell runner returning rc) runs.

    Hosts without dummy links or sch_netem (this development kernel has neither)
    answer False; callers then offer loss via nft only and no delay fault.
    """
    return run(NETEM_PROBE) == 0
