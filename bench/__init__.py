"""Benchmarks (not timed tests): each prints its ratio to a floor measured in the same run."""
