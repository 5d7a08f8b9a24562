"""The applications: CLI, daemon, console, adaptation, benchmarks; built by one runtime factory."""
