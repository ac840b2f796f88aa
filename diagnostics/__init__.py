"""Diagnostics: rules evaluated over each equipment's readings in time order, producing faults.

May import: core.
"""
