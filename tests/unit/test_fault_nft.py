"""nft rulesets: the generated text, and for real in two network namespaces joined by a veth pair.

The namespaces (drillstest-<pid>-a/-b, 198.18.0.1/30 <-> 198.18.0.2/30, the
benchmarking range) are created and deleted by the test, even on failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from drills.faults import nft

# --- the text ----------------------------------------------------------------------


def test_table_name_is_per_fault_and_sanitised():
    assert nft.table_name("partition-1a2b") == "drills_partition_1a2b"
    with pytest.raises(ValueError):
        nft.table_name("")


def test_blackhole_drops_never_rejects_and_spares_loopback():
    text = nft.blackhole_ruleset("b1")
    assert "reject" not in text
    assert 'iif "lo" accept' in text and 'oif "lo" accept' in text
    assert text.count("counter drop") == 2
    assert "hook input" in text and "hook output" in text
    # The first two lines make re-applying atomic and idempotent.
    assert text.startswith("table inet drills_b1 {}\ndelete table inet drills_b1\ntable inet drills_b1 {")


def test_blackhole_keeps_management_port_and_limits_to_interfaces():
    text = nft.blackhole_ruleset("b1", interfaces=["eth1", "eth2"], keep_tcp_ports=[22])
    assert "tcp dport 22 accept" in text and "tcp sport 22 accept" in text
    assert 'iifname { "eth1", "eth2" } counter drop' in text
    assert 'oifname { "eth1", "eth2" } counter drop' in text


def test_partition_sets_both_families_both_directions():
    text = nft.partition_ruleset("p", ["198.18.0.2", "10.1.0.0/24", "fd00::2", "198.18.0.2"])
    assert "elements = { 10.1.0.0/24, 198.18.0.2 }" in text
    assert "elements = { fd00::2 }" in text
    for rule in ("ip saddr @peers4 counter drop", "ip daddr @peers4 counter drop", "ip6 saddr @peers6", "ip6 daddr @peers6"):
        assert rule in text
    with pytest.raises(ValueError):
        nft.partition_ruleset("p", [])
    with pytest.raises(ValueError):
        nft.partition_ruleset("p", ["ceph-host-1"])  # names are resolved by the caller, not here


def test_packet_loss_uses_numgen():
    text = nft.packet_loss_ruleset("l", 25)
    assert text.count("numgen random mod 100 < 25 counter drop") == 2
    for bad in (0, 101, -5):
        with pytest.raises(ValueError):
            nft.packet_loss_ruleset("l", bad)


def test_delete_is_idempotent_text_and_tables_are_listed():
    assert nft.delete_ruleset("x") == "table inet drills_x {}\ndelete table inet drills_x\n"
    out = "table inet filter\ntable inet drills_p_1\ntable ip nat\ntable inet drills_b2\n"
    assert nft.list_drill_tables(out) == ["drills_p_1", "drills_b2"]


def test_netem_detection_uses_the_runner():
    seen = []
    assert nft.netem_supported(lambda cmd: seen.append(cmd) or 0) is True
    assert nft.netem_supported(lambda cmd: 2) is False
    assert "netem" in seen[0] and "dummy" in seen[0]


# --- for real, in namespaces --------------------------------------------------------

needs_root_nft = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
    reason="needs root, nft (Debian nftables) and ip (iproute2) to build network namespaces",
)

SERVER = textwrap.dedent(
    """
    import socket, threading
    t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("198.18.0.1", 7000)); t.listen(64)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("198.18.0.1", 7001))
    def tcp():
        while True:
            c, _ = t.accept(); c.close()
    threading.Thread(target=tcp, daemon=True).start()
    print("ready", flush=True)
    while True:
        d, a = u.recvfrom(64)
        try:
            u.sendto(d, a)
        except PermissionError:
            pass  # our own output dropped by nft: the kernel says EPERM
    """
)

CLIENT = textwrap.dedent(
    """
    import socket, sys
    mode = sys.argv[1]
    if mode == "tcp":
        s = socket.socket(); s.settimeout(0.7)
        try:
            s.connect(("198.18.0.1", 7000)); print("open")
        except socket.timeout:
            print("timeout")   # silence: the blackhole drops
        except ConnectionRefusedError:
            print("refused")   # what a reject would give - must never happen
    else:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(0.02)
        got = 0
        for i in range(int(mode)):
            try:
                u.sendto(b"%d" % i, ("198.18.0.1", 7001))
                u.recvfrom(64); got += 1
            except socket.timeout:
                pass
            except PermissionError:
                pass  # nft dropped it on this host's output: the kernel tells the sender EPERM
        print(got)
    """
)


def sh(*argv: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=20, check=check)


@pytest.fixture
def netns_pair():
    """Two namespaces joined by a veth pair; 'a' is 198.18.0.1, 'b' is 198.18.0.2."""
    a, b = f"drillstest-{os.getpid()}-a", f"drillstest-{os.getpid()}-b"
    server = None
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "-n", a, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1", "netns", b)
        sh("ip", "-n", a, "addr", "add", "198.18.0.1/30", "dev", "veth0")
        sh("ip", "-n", b, "addr", "add", "198.18.0.2/30", "dev", "veth1")
        for ns, dev in ((a, "veth0"), (b, "veth1")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", a, sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield a, b
    finally:
        if server is not None:
            server.kill()
            server.wait(5)
        for ns in (a, b):
            sh("ip", "netns", "del", ns, check=False)


def client(ns: str, mode: str) -> str:
    return sh("ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, mode).stdout.strip()


def load(ns: str, ruleset: str) -> None:
    sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=ruleset)


def tables(ns: str) -> list[str]:
    return nft.list_drill_tables(sh("ip", "netns", "exec", ns, "nft", "list", "tables").stdout)


@needs_root_nft
def test_blackhole_partition_and_heal_for_real(netns_pair):
    a, b = netns_pair
    assert client(b, "tcp") == "open"

    load(a, nft.blackhole_ruleset("bh1"))
    assert client(b, "tcp") == "timeout"  # dropped, not refused
    assert tables(a) == ["drills_bh1"]
    # A second fault's table coexists; healing one leaves the other.
    load(a, nft.partition_ruleset("pt1", ["198.18.0.2"]))
    load(a, nft.delete_ruleset("bh1"))
    assert tables(a) == ["drills_pt1"]
    assert client(b, "tcp") == "timeout"  # the partition still holds
    load(a, nft.delete_ruleset("pt1"))
    load(a, nft.delete_ruleset("pt1"))  # healing twice is fine (drill heal after a crash)
    assert tables(a) == []
    assert client(b, "tcp") == "open"

    # A partition from other peers does not touch this one.
    load(a, nft.partition_ruleset("pt2", ["198.18.0.6", "fd00::9"]))
    assert client(b, "tcp") == "open"
    load(a, nft.delete_ruleset("pt2"))


@needs_root_nft
def test_packet_loss_for_real(netns_pair):
    a, b = netns_pair
    assert int(client(b, "100")) >= 95
    load(a, nft.packet_loss_ruleset("loss1", 50))
    try:
        got = int(client(b, "200"))
        # 50% each way: ~25% of round trips survive.  Loose bounds: random, but never ~all or ~none.
        assert 10 <= got <= 110, got
    finally:
        load(a, nft.delete_ruleset("loss1"))
    assert int(client(b, "100")) >= 95
