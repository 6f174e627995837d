"""A drill record across runs: one SQLite database beside the reports (docs/history.md).

    store.py       reports/history.sqlite: runs, drills, figures, checks; rebuilt from run directories
    regression.py  each metric against the same drill's last passing runs -> Check objects
    calibrate.py   `drill calibrate`: a thresholds file from measured distributions
    prom.py        per-drill, per-phase figures and regression flags for the .prom textfile

The run directories stay the source of truth: the database can always be deleted and rebuilt.
"""
