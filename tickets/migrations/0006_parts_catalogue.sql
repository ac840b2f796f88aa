-- The spare-parts catalogue customers and staff look parts up in. A part's name is the name stock
-- (part_stock.part) and the diagnosis use for it, so the catalogue is what joins a part number to its
-- stock; the rows are seeded by `ironsight run` (ironsight/world.py) and maintained by staff.
CREATE TABLE IF NOT EXISTS parts_catalogue (
    part_number  text PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    description  text NOT NULL DEFAULT '',
    models       text[] NOT NULL DEFAULT '{}',   -- equipment models the part fits
    list_price   numeric(12, 2) CHECK (list_price >= 0),
    currency     text CHECK (currency ~ '^[A-Z]{3}$'),   -- ISO 4217
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((list_price IS NULL) = (currency IS NULL))
);

-- "Parts that fit this model" is every customer lookup's first filter.
CREATE INDEX IF NOT EXISTS parts_catalogue_models_idx ON parts_catalogue USING gin (models);

-- Availability asks, per part, which warehouses hold it: without this, every lookup reads the
-- whole stock table (its primary key starts with the place, not the part).
CREATE INDEX IF NOT EXISTS part_stock_in_warehouses_idx ON part_stock (part) INCLUDE (place_id, quantity)
    WHERE place_kind = 'warehouse' AND quantity > 0;
