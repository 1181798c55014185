"""Server backends: embedded PostgreSQL, Docker (compose file + SDK), external."""
