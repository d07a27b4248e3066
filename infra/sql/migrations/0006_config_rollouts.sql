-- 0006: configuration rollouts (README "Configuration changes"). A template upload (Blob) or an override change
-- (SQL) becomes a rollout: what changed (source, its ETag or updated_at, the template version and the one it
-- replaces), who changed it, its state and its waves. source + source_etag is unique, so a redelivered BlobCreated
-- event or a second timer run starts no second rollout. One row per affected sensor and rollout: its wave, its
-- state (pending, written, unchanged, acknowledged, failed, gone) and the configuration hash written.
CREATE TABLE config_rollouts (
    rollout_id       NVARCHAR(36)   NOT NULL PRIMARY KEY,
    kind             NVARCHAR(16)   NOT NULL,
    template         NVARCHAR(32)   NULL,
    facility_code    NVARCHAR(16)   NULL,
    source           NVARCHAR(255)  NOT NULL,
    source_etag      NVARCHAR(64)   NOT NULL,
    template_version NVARCHAR(64)   NULL,
    previous_version NVARCHAR(64)   NULL,
    changed_by       NVARCHAR(255)  NOT NULL,
    state            NVARCHAR(16)   NOT NULL,
    reason           NVARCHAR(64)   NULL,
    detail           NVARCHAR(1000) NULL,
    affected         INT            NOT NULL DEFAULT 0,
    wave_count       INT            NOT NULL DEFAULT 0,
    current_wave     INT            NOT NULL DEFAULT 0,
    wave_started_at  DATETIME2      NULL,
    lease_until      DATETIME2      NULL,
    created_at       DATETIME2      NOT NULL,
    updated_at       DATETIME2      NOT NULL
);
CREATE UNIQUE INDEX ux_config_rollouts_source ON config_rollouts (source, source_etag);
CREATE INDEX ix_config_rollouts_created ON config_rollouts (created_at);
CREATE TABLE config_rollout_devices (
    rollout_id         NVARCHAR(36)  NOT NULL,
    device_id          NVARCHAR(128) NOT NULL,
    hub                NVARCHAR(255) NOT NULL,
    facility_code      NVARCHAR(16)  NOT NULL,
    wave               INT           NOT NULL,
    state              NVARCHAR(16)  NOT NULL,
    reason             NVARCHAR(64)  NULL,
    previous_hash      NVARCHAR(64)  NULL,
    configuration_hash NVARCHAR(64)  NULL,
    ack_capable        BIT           NOT NULL DEFAULT 0,
    updated_at         DATETIME2     NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);
