-- Trained models with their training window and metadata; one active per kind and scope
-- (an equipment model, or one machine when it has enough history of its own).
CREATE TABLE IF NOT EXISTS diagnostic_models (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL,
    version         integer NOT NULL,
    equipment_model text NOT NULL,
    equipment_id    text REFERENCES equipment (id) ON DELETE CASCADE,
    trained_at      timestamptz NOT NULL DEFAULT now(),
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    samples         integer NOT NULL,
    params          jsonb NOT NULL,
    active          boolean NOT NULL DEFAULT true
);
CREATE UNIQUE INDEX IF NOT EXISTS diagnostic_models_active_idx
    ON diagnostic_models (kind, equipment_model, coalesce(equipment_id, '')) WHERE active;
