-- The ledger of applied migrations (infra/sql/migrations/NNNN_name.sql): one row per version, written by the
-- runner in the same transaction as the migration itself (infra/deploy.sh on Azure SQL; local/seed/migrations.py
-- on the local SQLite database). Created by the runner when absent; it is not a migration because the runners
-- read it before they can know which migrations to apply. The same T-SQL subset as the migrations.

CREATE TABLE schema_migrations (
    version     NVARCHAR(16)  NOT NULL PRIMARY KEY,
    name        NVARCHAR(128) NOT NULL,
    applied_at  DATETIME2     NOT NULL
);
