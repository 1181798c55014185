"""Infrastructure: settings, connection info, the one engine/connection factory,
server-level admin SQL, PostgreSQL's programs, the schema, and the error root."""
