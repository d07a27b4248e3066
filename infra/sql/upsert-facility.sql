-- One facility from the operator's CSV (deploy.sh --facilities). Idempotent: an existing row is left as it is.
-- sqlcmd variables (validated by deploy.sh, no quotes): CODE, NAME, REGION, PREFERRED_HUB, MANAGER_EMAIL.
IF NOT EXISTS (SELECT 1 FROM facilities WHERE facility_code = N'$(CODE)')
    INSERT INTO facilities (facility_code, name, region, preferred_hub, manager_email, active)
    VALUES (N'$(CODE)', N'$(NAME)', N'$(REGION)', N'$(PREFERRED_HUB)', N'$(MANAGER_EMAIL)', 1);
