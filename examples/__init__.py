"""Example jobs and schedule that `make run` serves."""
