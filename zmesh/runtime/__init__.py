"""Drivers that do real I/O around the sans-I/O core (asyncio on CPython)."""
