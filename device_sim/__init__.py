"""Simulated controllers: machine physics, GPS movement, fault injection, the fleet runner.

May import: core (message schema, topics and the MQTT client factory only).
"""
