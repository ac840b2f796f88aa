"""Ingest: MQTT consumer, decoding and validation, dead letters, batched COPY into ``readings``.

May import: core.
"""
