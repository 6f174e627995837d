"""The target model: reading, validating and writing target files (no cluster)."""

from pathlib import Path

import pytest

from drills.target import Access, Cluster, Host, Rack, Target, TargetError, dump_target, load_target

EXAMPLE = Path(__file__).parents[2] / "examples" / "staging-target.toml"


def test_example_staging_target_reads():
    t = load_target(EXAMPLE)
    assert [r.name for r in t.racks] == ["rack-a", "rack-b", "rack-c"]
    assert t.host("stor-a1").access.kind == "ssh"
    assert t.host("stor-a1").power.password_env == "BMC_PASSWORD"
    assert t.host("stor-a2").power.kind == "redfish"
    assert t.osd_ids == list(range(8))
    assert t.rack_of("stor-b1").name == "rack-b"
    assert t.host_of_daemon("osd.3").name == "stor-a2"
    assert t.load_hosts[0].name == "load-1"


def test_round_trip(tmp_path):
    t = Target(
        cluster=Cluster(name="c", fsid="f", conf="/c", keyring="/k"),
        state_dir="/s",
        destructive=True,
        racks=(Rack("r1", (Host("h1", "10.0.0.1", ("osd.0",), Access("local", netns="x-h1")),)),),
    )
    dump_target(t, tmp_path / "t.toml")
    back = load_target(tmp_path / "t.toml")
    assert back.racks == t.racks and back.cluster == t.cluster and back.destructive


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s.replace('client = "client.drills"', 'client = "client.drills"\nbogus = 1'), "unknown key(s) bogus"),
        (lambda s: s.replace("op_timeout = 30.0", 'op_timeout = "soon"'), "cluster.op_timeout: expected a number, got 'soon'; write e.g. op_timeout = 30.0"),
        (lambda s: s.replace('"osd.2", "osd.3"', '"osd.2", "osd.1"'), "daemon 'osd.1' is listed on two hosts"),
        (lambda s: s.replace('kind = "ipmi", address = "stor-b1-bmc.staging.example", ', 'kind = "ipmi", '), "power.kind = 'ipmi' needs power.address"),
        (lambda s: s.replace('deployment = "package"', 'deployment = "k8s"'), "cluster.deployment: 'k8s' is not one of"),
        (lambda s: s.replace('"osd.4"', '"osd.four"'), "an OSD id is a number"),
        (lambda s: s.replace("[cluster]\nname", "[cluster]\nnom"), "unknown key(s) nom"),
        (lambda s: s + "\n[[racks]\n", "is not valid TOML"),
    ],
)
def test_bad_target_files_say_what_is_wrong(tmp_path, mutate, message):
    p = tmp_path / "bad.toml"
    p.write_text(mutate(EXAMPLE.read_text()))
    with pytest.raises(TargetError) as e:
        load_target(p)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_target_file_says_how_to_get_one(tmp_path):
    with pytest.raises(TargetError, match="drill sandbox up"):
        load_target(tmp_path / "nope.toml")


def test_unknown_names_list_the_known_ones():
    t = load_target(EXAMPLE)
    with pytest.raises(TargetError, match="unknown rack 'rack-z'; the target has: rack-a, rack-b, rack-c"):
        t.rack("rack-z")
    with pytest.raises(TargetError, match="unknown host"):
        t.host("nope")
