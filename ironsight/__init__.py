"""Composition root: the ``ironsight`` command, embedded services and process supervision.

May import: everything.
"""
