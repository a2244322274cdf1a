"""The command line: the user's front door."""
