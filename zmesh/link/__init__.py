"""Links: an authenticated session with one neighbour over one transport."""
