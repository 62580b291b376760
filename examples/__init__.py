"""Examples built on rtecs's public API."""
