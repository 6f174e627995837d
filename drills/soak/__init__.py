"""The soak room: `drill soak`, a seeded chaos soak (docs/soak.md).

    schedule.py  the drawn schedule: fault kinds, aims and holds from a seeded random.Random (pure)
    figures.py   per-fault figures from the timeline: IOPS and p99 before and during each fault (pure)
    runner.py    the runbook: block and object clients throughout, then each step inject, hold, heal, settle
    plan.py      the drill's faults for admission and its lines in `drill run --dry-run`
    cli.py       `drill soak` (registered in drills/cli.py)

The drill module is drills/test_soak.py (the suites `soak` and `full`); the report's section drills/report/soak.py.
"""
