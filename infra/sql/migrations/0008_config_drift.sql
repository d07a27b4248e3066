-- 0008: configuration drift and deleted overrides (README "Configuration changes"). swept_at: when a rollout's final
-- sweep ran (sensors twin setup configured from a cached older source while the rollout went out get a last wave).
-- config_override_keys: the (facility, sensor type) keys of facility_overrides as the periodic check last saw them
-- with their updated_at stamp, so that a deleted row (which leaves no updated_at behind) is noticed and the
-- sensors it applied to are rolled back to template (+) the remaining rows.
ALTER TABLE config_rollouts ADD swept_at DATETIME2 NULL;

CREATE TABLE config_override_keys (
    facility_code   NVARCHAR(16)   NOT NULL,
    sensor_type     NVARCHAR(32)   NOT NULL,
    stamp           NVARCHAR(32)   NOT NULL,
    seen_at         DATETIME2      NOT NULL,
    PRIMARY KEY (facility_code, sensor_type)
);
