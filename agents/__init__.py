"""Faust agents, one concern per module."""
