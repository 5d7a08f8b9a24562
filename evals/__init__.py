"""Task suites and verifiers, bundled data, baselines, the benchmark harness, reports and plots."""
