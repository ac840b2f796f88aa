"""The device side: the registry of controllers and their credentials, provisioning, presence,
remote commands and the broker's password and ACL files, with the worker that runs them.

Imports ``core`` only. The controllers' tables (``devices``, ``device_presence``, ``commands``,
``command_events``) are created by ingest's migration ``0003_devices``, where they began; the vans'
trackers (``vehicle_trackers``) by this package's own ``migrations/``.
"""
