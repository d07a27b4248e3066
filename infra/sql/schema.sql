-- Schema of the onboarding database: the COMBINED VIEW of infra/sql/migrations/*.sql, applied in order (the
-- migrations are the source of truth and infra/deploy.sh never applies this file). Read by people, by test fixtures
-- that want today's tables in one step, and by the local seed to restore a table or index dropped by hand from a
-- local database whose migrations are all recorded. tests/infra/test_migrations.py fails when applying every
-- migration to an empty SQLite database gives another schema: a new migration comes with its change folded in here.
-- Written in the subset of T-SQL that also runs on SQLite through the SQLite3 ODBC driver (DESIGN.md
-- section 4): unqualified names, natural keys (no IDENTITY), no NVARCHAR(MAX), timestamps passed as
-- parameters by the code. Statements are separated by semicolons at the end of a line.

CREATE TABLE facilities (
    facility_code   NVARCHAR(16)  NOT NULL PRIMARY KEY,
    name            NVARCHAR(200) NOT NULL,
    region          NVARCHAR(32)  NOT NULL,
    preferred_hub   NVARCHAR(255) NOT NULL,
    manager_email   NVARCHAR(320) NOT NULL,
    active          BIT           NOT NULL DEFAULT 1
);

CREATE TABLE iot_hubs (
    host_name           NVARCHAR(255) NOT NULL PRIMARY KEY,
    region              NVARCHAR(32)  NOT NULL,
    max_devices         INT           NOT NULL CHECK (max_devices > 0),
    max_daily_messages  INT           NOT NULL CHECK (max_daily_messages > 0),
    accepting           BIT           NOT NULL DEFAULT 1
);

-- Hub device counts shared by every webhook instance (allocation/capacity.py): places taken ever, and an
-- anchor (the registry's device count at a quiet moment, and `allocations` then). Estimated devices =
-- anchor_devices + allocations - anchor_allocations; a place is taken only while that is below the limit.
CREATE TABLE hub_allocations (
    host_name           NVARCHAR(255) NOT NULL PRIMARY KEY,
    allocations         BIGINT        NOT NULL DEFAULT 0,
    anchor_devices      BIGINT        NULL,
    anchor_allocations  BIGINT        NULL
);

-- sensor_type '*' applies to every sensor type of the facility; a type-specific row is applied after it.
CREATE TABLE facility_overrides (
    facility_code   NVARCHAR(16)   NOT NULL,
    sensor_type     NVARCHAR(32)   NOT NULL,
    overrides       NVARCHAR(4000) NOT NULL,
    updated_at      DATETIME2      NOT NULL,
    PRIMARY KEY (facility_code, sensor_type)
);

-- Source of truth for the CRLs: one row per revoked certificate.
CREATE TABLE revocations (
    issuer          NVARCHAR(255) NOT NULL,
    serial_number   NVARCHAR(64)  NOT NULL,
    reason          NVARCHAR(32)  NOT NULL,
    revoked_at      DATETIME2     NOT NULL,
    revoked_by      NVARCHAR(255) NOT NULL,
    PRIMARY KEY (issuer, serial_number)
);

-- Audit trail of every provisioning decision.
CREATE TABLE provisioning_events (
    event_id        UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,
    at              DATETIME2        NOT NULL,
    registration_id NVARCHAR(128)    NOT NULL,
    outcome         NVARCHAR(16)     NOT NULL CHECK (outcome IN ('allocated', 'rejected', 'configured', 'error')),
    reason_code     NVARCHAR(64)     NULL,
    hub             NVARCHAR(255)    NULL,
    details         NVARCHAR(4000)   NULL
);

CREATE INDEX ix_provisioning_events_at ON provisioning_events (at);

CREATE INDEX ix_provisioning_events_registration ON provisioning_events (registration_id);

-- Asset register of the certificates this product issued.
CREATE TABLE certificates (
    issuer          NVARCHAR(255) NOT NULL,
    serial_number   NVARCHAR(64)  NOT NULL,
    device_id       NVARCHAR(128) NOT NULL,
    not_before      DATETIME2     NOT NULL,
    not_after       DATETIME2     NOT NULL,
    status          NVARCHAR(16)  NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked', 'superseded')),
    -- 0002: the certificate as issued (PEM), to pin in a disabled DPS individual enrollment on a revocation for
    -- cause; NULL for certificates issued before it. Where SQLite puts an added column: after the last one.
    certificate_pem NVARCHAR(4000) NULL,
    -- 0003: the partner whose request issued it (NULL: before 0003, or by the renewal collector).
    partner_id      NVARCHAR(64)  NULL,
    -- 0004: the manufacturing lot of the partner's batch request that issued it, and when it was issued (NULL: before
    -- 0004, outside a batch, or by the renewal collector).
    lot             NVARCHAR(64)  NULL,
    issued_at       DATETIME2     NULL,
    -- 0005: when the allocation webhook first saw DPS present it for this device (renewal completes on it).
    provisioned_at  DATETIME2     NULL,
    PRIMARY KEY (issuer, serial_number)
);

CREATE INDEX ix_certificates_device ON certificates (device_id);

CREATE INDEX ix_certificates_lot ON certificates (lot);

-- Audit trail of the certificate lifecycle: issuance, revocation, CRL publication, renewal steps.
CREATE TABLE certificate_events (
    event_id        UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,
    at              DATETIME2        NOT NULL,
    action          NVARCHAR(32)     NOT NULL,
    device_id       NVARCHAR(128)    NULL,
    issuer          NVARCHAR(255)    NULL,
    serial_number   NVARCHAR(64)     NULL,
    reason_code     NVARCHAR(64)     NULL,
    actor           NVARCHAR(255)    NULL,
    details         NVARCHAR(4000)   NULL
);

CREATE INDEX ix_certificate_events_at ON certificate_events (at);

CREATE INDEX ix_certificate_events_device ON certificate_events (device_id);

-- 0003: manufacturing partners (docs/partners.md): each its own identity (the client ID of its Entra application),
-- its scope (facilities, sensor types: comma lists or '*'; a serial prefix) and its daily quota, whose shared
-- counter (quota_day, quota_used) one conditional UPDATE advances (cert_lifecycle/partners.py).
CREATE TABLE partners (
    partner_id      NVARCHAR(64)   NOT NULL PRIMARY KEY,
    name            NVARCHAR(200)  NOT NULL,
    facilities      NVARCHAR(1000) NOT NULL DEFAULT '*',
    sensor_types    NVARCHAR(200)  NOT NULL DEFAULT '*',
    serial_prefix   NVARCHAR(32)   NULL,
    daily_quota     INT            NOT NULL CHECK (daily_quota >= 0),
    quota_day       NVARCHAR(10)   NULL,
    quota_used      INT            NOT NULL DEFAULT 0,
    active          BIT            NOT NULL DEFAULT 1,
    created_at      DATETIME2      NOT NULL
);

-- 0006: configuration rollouts (README "Configuration changes"): one row per rollout (what changed, who, state,
-- waves), one per affected sensor and rollout (its wave, state and the hash written).
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
    updated_at       DATETIME2      NOT NULL ,
    -- 0008: when the rollout's final sweep (late joiners) ran (spaced as SQLite's ALTER TABLE ADD writes it).
    swept_at         DATETIME2      NULL);
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

-- 0008: the keys of facility_overrides as the periodic change check last saw them (a deleted row shows as a key gone).
CREATE TABLE config_override_keys (
    facility_code   NVARCHAR(16)   NOT NULL,
    sensor_type     NVARCHAR(32)   NOT NULL,
    stamp           NVARCHAR(32)   NOT NULL,
    seen_at         DATETIME2      NOT NULL,
    PRIMARY KEY (facility_code, sensor_type)
);

-- 0007: the onboarding funnel: one row per sensor and stage reached (once only: the primary key), and one row per
-- stuck-sensor digest sent (a facility, a stage, a day). funnel/, shared/audit.py onboarding_stage.
CREATE TABLE onboarding_stages (
    device_id       NVARCHAR(128)  NOT NULL,
    stage           NVARCHAR(16)   NOT NULL CHECK (stage IN ('allocated', 'created', 'configured', 'acknowledged', 'live')),
    at              DATETIME2      NOT NULL,
    recorded_at     DATETIME2      NOT NULL,
    hub             NVARCHAR(255)  NULL,
    facility        NVARCHAR(16)   NULL,
    details         NVARCHAR(4000) NULL,
    PRIMARY KEY (device_id, stage)
);

CREATE INDEX ix_onboarding_stages_at ON onboarding_stages (at);

CREATE TABLE onboarding_digests (
    digest_date     NVARCHAR(10)   NOT NULL,
    facility        NVARCHAR(16)   NOT NULL,
    stage           NVARCHAR(16)   NOT NULL,
    sent_at         DATETIME2      NOT NULL,
    devices         INT            NOT NULL,
    PRIMARY KEY (digest_date, facility, stage)
);
