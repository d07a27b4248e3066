-- 0007: the onboarding funnel (funnel/, README "Onboarding funnel"). One row per sensor and stage reached
-- (allocated, created, configured, acknowledged, live) with the time it was reached; the primary key makes the row
-- once-only, whatever re-runs or redeliveries happen (shared/audit.py onboarding_stage). And one row per stuck-sensor
-- digest sent (a facility, a stage, a day), so the reconciler mails each facility manager at most once a day per stage.
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
