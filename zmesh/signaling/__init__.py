"""Signaling: signed WebRTC offers and answers, with no central server."""
