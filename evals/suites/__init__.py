"""Task suites, one file each."""
