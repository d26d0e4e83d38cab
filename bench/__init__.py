"""Benchmarks of the collaborative editing server against a bare-websockets floor (issue 8).

Run `python -m bench --quick` (about 2 minutes) or `python -m bench` (full, under 15 minutes).
"""
