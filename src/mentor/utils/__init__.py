"""Small shared helpers: atomic file writes, hashing, the cache location."""
