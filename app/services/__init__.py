"""app/services."""
