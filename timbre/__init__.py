"""timbre."""
