"""restore room."""
