"""Preflight checks of a target's hosts (pytest-testinfra), and the gate that blocks destructive drills."""
