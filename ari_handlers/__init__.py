"""ari_handlers."""
