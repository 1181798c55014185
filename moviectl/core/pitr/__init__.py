"""Point-in-time recovery: WAL archive, base backups, restore to a moment, drills."""
