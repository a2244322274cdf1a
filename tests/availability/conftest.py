"""Fixtures of the availability tests: the tracker's sim bench (tracker_sim.py)."""

from tests.availability.tracker_sim import bench  # noqa: F401
