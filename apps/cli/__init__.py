"""The `insightloop` command line."""
