"""Bundled YAML configs."""
