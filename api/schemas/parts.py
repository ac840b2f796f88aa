"""The spare-parts catalogue, and the parts that fit one machine with where they are in stock."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field, model_validator

PART_NUMBER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
PART_NUMBER_MAX_CHARS = 64

Model = Annotated[str, Field(min_length=1, max_length=64)]


class PartCatalogueBody(BaseModel):
    name: str = Field(min_length=1, max_length=100,
                      description="the name stock and the diagnosis use for the part; unique in the catalogue")
    description: str = Field("", max_length=2000)
    models: list[Model] = Field(default_factory=list, max_length=100, description="equipment models it fits")
    list_price: Decimal | None = Field(None, ge=0, max_digits=12, decimal_places=2)
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="ISO 4217; required with a list price")

    @model_validator(mode="after")
    def _price_has_currency(self) -> PartCatalogueBody:
        if (self.list_price is None) != (self.currency is None):
            raise ValueError("list_price and currency go together: give both or neither")
        return self


class PartCataloguePublic(PartCatalogueBody):
    part_number: str
    updated_at: datetime


class PartsCataloguePublic(BaseModel):
    data: list[PartCataloguePublic]
    count: int = Field(description="parts matching in all (data holds at most limit of them)")


class NearestStockPublic(BaseModel):
    warehouse_id: str
    warehouse_name: str
    quantity: int
    distance_km: float = Field(description="great-circle distance from the machine")


class MachinePartPublic(BaseModel):
    part_number: str
    name: str
    description: str
    list_price: Decimal | None
    currency: str | None
    available: bool = Field(description="some warehouse holds it")
    in_stock: int = Field(description="held in all warehouses")
    nearest: NearestStockPublic | None = Field(
        description="the nearest warehouse holding it; None when none does or the machine's position is unknown")


class MachinePartsPublic(BaseModel):
    equipment_id: str
    model: str
    position_known: bool = Field(description="false: neither a reported position nor a site, so no distances")
    data: list[MachinePartPublic]
    count: int = Field(description="parts matching in all (data holds at most limit of them)")
