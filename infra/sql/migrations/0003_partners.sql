-- 0003 partners: each manufacturing partner is its own identity (docs/partners.md). One row per partner, keyed by the
-- client ID of its Entra application (the `azp`/`appid` claim of its token; locally the id the stack issued), with
-- what it may ask for: facilities and sensor types (comma lists, '*' for all), a serial prefix (NULL: any), a daily
-- quota, and active. quota_day/quota_used are the shared counter of today's issuances (UTC day, 'YYYY-MM-DD'): one
-- conditional UPDATE takes a unit (cert_lifecycle/partners.py), so every instance of the app counts against one
-- number. certificates.partner_id records who asked for each certificate (NULL: issued before this migration, or by
-- the renewal collector). The subset of T-SQL that also runs on SQLite through the SQLite3 ODBC driver.

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

ALTER TABLE certificates ADD partner_id NVARCHAR(64) NULL;
