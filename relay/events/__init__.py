"""The one public event shape and the pure functions that build it."""
