"""The soak room: `drill soak`, a seeded chaos soak (docs/soak.md).

    schedule.py  the drawn schedule: fault kinds, aims and holds from a seeded random.Random (pure)
    figures.py   per-fault figures from the timeline: IOPS and p99 before and during each fault (pure)
    runner.py    the runbook: block and object clients throughout, then each step inject, hold, heal, settle
    cli.py       `drill soak` (registered in drills/cli.py)
"""
