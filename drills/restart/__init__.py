"""Controlled OSD restart under a per-host memory budget (the article's "controlled launch")."""
