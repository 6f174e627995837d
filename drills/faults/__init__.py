"""faults room."""
