"""Onion circuits: Sphinx-like one-round-trip setup with X-Wing, and LIONESS cells."""
