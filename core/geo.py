"""Great-circle geometry on WGS84 coordinates (a sphere is close enough for travel estimates)."""

from __future__ import annotations

import math

EARTH_RADIUS_KM = 6371.0088


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance between two points, in kilometres."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def step_towards(lat: float, lon: float, to_lat: float, to_lon: float, km: float) -> tuple[float, float]:
    """The point ``km`` along the straight line to the target (the target itself when closer)."""
    total = distance_km(lat, lon, to_lat, to_lon)
    if total <= km or total == 0:
        return to_lat, to_lon
    share = km / total
    return lat + (to_lat - lat) * share, lon + (to_lon - lon) * share
