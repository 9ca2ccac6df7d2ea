"""Reliable byte streams carried in circuit cells."""
