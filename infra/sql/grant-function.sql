-- The function app's managed identity as a database user (Microsoft Entra-only server: no password exists).
-- Run by infra/deploy.sh as the Entra administrator with sqlcmd variables APP_NAME and APP_OBJECT_ID.
-- WITH OBJECT_ID resolves the identity without a Microsoft Graph lookup by the server. Idempotent.
IF NOT EXISTS (SELECT 1 FROM sys.database_principals WHERE name = N'$(APP_NAME)')
    CREATE USER [$(APP_NAME)] FROM EXTERNAL PROVIDER WITH OBJECT_ID = '$(APP_OBJECT_ID)';
ALTER ROLE db_datareader ADD MEMBER [$(APP_NAME)];
ALTER ROLE db_datawriter ADD MEMBER [$(APP_NAME)];
