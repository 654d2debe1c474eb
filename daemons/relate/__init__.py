"""Relate Mail: the daemons and the code they share."""

__version__ = "0.1.0"
