"""demo/support."""
