"""The benchmark harness: methods side by side on identical splits, reports and plots."""
