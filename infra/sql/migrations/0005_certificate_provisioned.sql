-- 0005: when DPS first provisioned a device with this certificate, as the allocation webhook saw it (the certificate
-- DPS presented, on record for that registration ID). Renewal completes on it: IoT Hub knows a DPS-provisioned
-- device by its leaf certificate, so a renewed certificate is in use only once the device has re-provisioned with it
-- (docs/contracts.md 7), and only then is the old one superseded. NULL: never seen by the webhook (not yet used, or
-- provisioned before 0005).
ALTER TABLE certificates ADD provisioned_at DATETIME2 NULL;
