-- 0004: manufacturing lots (docs/partners.md). A partner's batch request (POST /api/certificates/batch) names the
-- production lot; every certificate it issues records it, and the moment it was issued (not_before is back-dated by
-- a few minutes for clock skew, so it is not that moment). NULL for certificates issued before 0004, outside a batch
-- or by the renewal collector. The index serves a lot's status (GET /api/certificates/lots/{lot}) and the revocation
-- of a lot ({"lot": ...}).
ALTER TABLE certificates ADD lot NVARCHAR(64) NULL;
ALTER TABLE certificates ADD issued_at DATETIME2 NULL;
CREATE INDEX ix_certificates_lot ON certificates (lot);
