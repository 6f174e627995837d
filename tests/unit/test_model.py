"""The degraded-write model: the article's numbers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from drills.model import (
    ARTICLE_COSTS,
    Topology,
    WriteCosts,
    degraded_pg_fraction,
    degraded_pg_fraction_weighted,
    expected_write_latency_ms,
    failure_domain_table,
    object_fraction_from_degraded_ratio,
    object_recovery_ms,
    predict_iops_series,
    predict_latency_series,
    slowdown,
)


def test_article_degraded_write_costs_45_ms() -> None:
    # Read 4 MiB (22 ms) + write 4 MiB (22 ms) + the 4 KiB write itself (1 ms).
    assert object_recovery_ms(22.0, 22.0) == 44.0
    assert ARTICLE_COSTS == WriteCosts(1.0, 44.0)
    assert expected_write_latency_ms(ARTICLE_COSTS, 1.0) == pytest.approx(45.0)
    assert slowdown(ARTICLE_COSTS, 1.0) == pytest.approx(45.0)
    assert expected_write_latency_ms(ARTICLE_COSTS, 0.0) == pytest.approx(1.0)


@pytest.mark.parametrize("f, ms", [(0.5, 23.0), (0.75, 34.0), (0.9, 40.6)])
def test_article_average_service_times(f: float, ms: float) -> None:
    # The article: (45 + 1)/2 = 23 ms, (45*3 + 1)/4 = 34 ms, (45*9 + 1)/10 = 41 ms (40.6 rounded).
    assert expected_write_latency_ms(ARTICLE_COSTS, f) == pytest.approx(ms)


def test_fraction_out_of_range() -> None:
    with pytest.raises(ValueError):
        expected_write_latency_ms(ARTICLE_COSTS, 1.2)
    with pytest.raises(ValueError):
        WriteCosts(-1.0, 3.0)


def test_predicted_series_keeps_gaps() -> None:
    assert predict_latency_series(ARTICLE_COSTS, [0.0, None, 1.0, 0.5]) == [1.0, None, 45.0, 23.0]
    assert predict_iops_series(ARTICLE_COSTS, [0.0, None, 1.0], queue_depth=1) == [1000.0, None, pytest.approx(22.22, 0.01)]


@pytest.mark.parametrize("n, fraction, ms", [(3, 1.0, 45.0), (10, 0.3, 14.2), (20, 0.15, 7.6)])
def test_article_failure_domain_table(n: int, fraction: float, ms: float) -> None:
    # The article: one of three -> 45 ms, one of ten -> ~14 ms, one of twenty -> ~8 ms.
    assert degraded_pg_fraction(n, pool_size=3, lost_domains=1) == pytest.approx(fraction)
    rows = {r.failure_domains: r for r in failure_domain_table((3, 10, 20))}
    assert rows[n].degraded_fraction == pytest.approx(fraction)
    assert rows[n].mean_write_ms == pytest.approx(ms)


def test_one_lost_domain_is_size_over_n_and_more_lost_is_worse() -> None:
    for n in range(3, 30):
        assert degraded_pg_fraction(n, 3, 1) == pytest.approx(3 / n)
    assert degraded_pg_fraction(5, 3, 2) == pytest.approx(1 - 1 / 10)  # C(3,3)/C(5,3) = 1/10
    assert degraded_pg_fraction(6, 3, 2) == pytest.approx(1 - 4 / 20)
    assert degraded_pg_fraction(6, 2, 1) == pytest.approx(2 / 6)
    with pytest.raises(ValueError):
        degraded_pg_fraction(2, 3, 1)


def test_weighted_equals_uniform_for_equal_weights() -> None:
    domains = {f"rack{i}": 4.0 for i in range(7)}
    assert degraded_pg_fraction_weighted(domains, ["rack0"]) == pytest.approx(3 / 7)
    assert degraded_pg_fraction_weighted(domains, ["rack0", "rack1"]) == pytest.approx(degraded_pg_fraction(7, 3, 2))


def test_weighted_heavier_domain_degrades_more() -> None:
    domains = {"big": 8.0, "a": 2.0, "b": 2.0, "c": 2.0, "d": 2.0}
    assert degraded_pg_fraction_weighted(domains, ["big"]) > 3 / 5 > degraded_pg_fraction_weighted(domains, ["a"])
    with pytest.raises(ValueError, match="not in the topology"):
        degraded_pg_fraction_weighted(domains, ["zzz"])


def test_topology_from_target() -> None:
    host = lambda name, osds: SimpleNamespace(name=name, osd_ids=osds)  # noqa: E731
    target = SimpleNamespace(racks=[
        SimpleNamespace(name="r1", hosts=[host("h1", [0, 1])]),
        SimpleNamespace(name="r2", hosts=[host("h2", [2, 3])]),
        SimpleNamespace(name="r3", hosts=[host("h3", [4, 5])]),
        SimpleNamespace(name="r4", hosts=[host("h4", [6, 7])]),
    ])
    topo = Topology.from_target(target)
    assert topo.domains == {"r1": 2.0, "r2": 2.0, "r3": 2.0, "r4": 2.0}
    rows = {name: (f, ms) for name, f, ms, _ in topo.table()}
    assert rows["r1"] == (pytest.approx(0.75), pytest.approx(34.0))
    assert len(Topology.from_target(target, "host").domains) == 4


def test_object_fraction_from_ceph_degraded_ratio() -> None:
    # One of three copies missing on every object -> Ceph says 1/3 degraded, all objects affected.
    assert object_fraction_from_degraded_ratio(1 / 3, 3) == pytest.approx(1.0)
    assert object_fraction_from_degraded_ratio(0.1, 3) == pytest.approx(0.3)
    assert object_fraction_from_degraded_ratio(0.9, 3) == 1.0
