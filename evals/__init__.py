"""Measurements that print numbers and write evals/RESULTS.md sections and PNG plots."""
