"""The air a simulated machine works in: ambient temperature at a job site through the year and the day.

Deterministic given the time, so a benchmark can simulate January or July in seconds and get the same
weather every run. Three parts add up:

- the season: a cosine around the site's annual mean, coldest in late January (the seasons lag the
  solstices by about a month), whose amplitude grows with latitude; mirrored south of the equator;
- the day: a cosine in the site's local clock time, coolest before dawn and warmest mid-afternoon,
  wider in summer (longer, clearer days) than in winter;
- the weather: each local day's anomaly, drawn from a generator seeded by the site and the date, and
  blended from one day's noon to the next so that the air never jumps at midnight.
"""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

DAYS_PER_YEAR = 365.25
# Day of the year of the coldest air (about 20 January north of the equator).
COLDEST_DAY_OF_YEAR = 20.0
# Half the difference between the warmest and the coldest month's mean, growing with latitude: a
# rough fit to European stations (Madrid, 40° N: ±9.7 °C; Warsaw, 52° N: ±11.3 °C).
SEASONAL_AMPLITUDE_C = 4.0
SEASONAL_AMPLITUDE_PER_DEGREE_LATITUDE_C = 0.14
# Half the daily range, in the depth of winter and at the height of summer (about ±5 °C on average).
DAILY_AMPLITUDE_WINTER_C = 3.5
DAILY_AMPLITUDE_SUMMER_C = 6.0
# Local hour of the warmest air; the coolest is twelve hours earlier.
WARMEST_HOUR = 15.0
# Standard deviation of a day's departure from the seasonal norm (a warm spell, a cold snap).
WEATHER_SIGMA_C = 2.5


@dataclass(frozen=True, slots=True)
class SiteClimate:
    """A site's climate: its name (seeds its weather), latitude, IANA time zone and annual mean."""

    site: str
    lat: float
    timezone: str
    annual_mean_c: float

    @property
    def seasonal_amplitude_c(self) -> float:
        return SEASONAL_AMPLITUDE_C + SEASONAL_AMPLITUDE_PER_DEGREE_LATITUDE_C * abs(self.lat)

    def ambient_c(self, at: datetime) -> float:
        """Air temperature at the site at ``at`` (timezone-aware), in °C."""
        local = at.astimezone(_zone(self.timezone))
        hour = local.hour + local.minute / 60.0 + local.second / 3600.0
        season = self.season(at)
        daily_amplitude_c = DAILY_AMPLITUDE_WINTER_C + (DAILY_AMPLITUDE_SUMMER_C - DAILY_AMPLITUDE_WINTER_C) * (
            season + 1.0) / 2.0
        daily = daily_amplitude_c * math.cos(2.0 * math.pi * (hour - WARMEST_HOUR) / 24.0)
        return self.annual_mean_c + self.seasonal_amplitude_c * season + daily + self._weather_c(local.date(), hour)

    def season(self, at: datetime) -> float:
        """-1 at the coldest time of the year, +1 at the warmest."""
        local = at.astimezone(_zone(self.timezone))
        day = local.timetuple().tm_yday + (local.hour + local.minute / 60.0) / 24.0
        northern = -math.cos(2.0 * math.pi * (day - COLDEST_DAY_OF_YEAR) / DAYS_PER_YEAR)
        return northern if self.lat >= 0 else -northern

    def _weather_c(self, day: date, hour: float) -> float:
        # Each day's anomaly holds at its noon; in between, the two nearest noons blend linearly.
        if hour < 12.0:
            before, after, share_after = day - timedelta(days=1), day, (hour + 12.0) / 24.0
        else:
            before, after, share_after = day, day + timedelta(days=1), (hour - 12.0) / 24.0
        first, second = _day_anomaly_c(self.site, before), _day_anomaly_c(self.site, after)
        return first + (second - first) * share_after


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@functools.lru_cache(maxsize=65536)
def _day_anomaly_c(site: str, day: date) -> float:
    return random.Random(f"weather:{site}:{day.isoformat()}").gauss(0.0, WEATHER_SIGMA_C)
