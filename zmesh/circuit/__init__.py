"""Circuits on a node: the relay table (we relay or end them) and the builder (we own them)."""
