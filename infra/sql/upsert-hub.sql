-- One regional IoT hub in iot_hubs (allocation reads capacity and region from it). Idempotent: an existing row
-- keeps the limits an operator may have tuned. sqlcmd variables: HOST_NAME, REGION, MAX_DEVICES, MAX_DAILY_MESSAGES.
IF NOT EXISTS (SELECT 1 FROM iot_hubs WHERE host_name = N'$(HOST_NAME)')
    INSERT INTO iot_hubs (host_name, region, max_devices, max_daily_messages, accepting)
    VALUES (N'$(HOST_NAME)', N'$(REGION)', $(MAX_DEVICES), $(MAX_DAILY_MESSAGES), 1);
