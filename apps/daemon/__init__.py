"""The long-running improvement daemon."""
