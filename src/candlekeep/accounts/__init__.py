"""Exchange accounts: snapshots of their state and incremental pulls of their history."""
