-- 0002 certificate_pem: the certificate itself (PEM), written by the issuer beside its row in the register, so that a
-- revocation for cause can pin the revoked certificate in a disabled DPS individual enrollment (shared/dps.py,
-- cert_lifecycle/revocation.py). NULL for certificates issued before this migration: those cannot be disallowed at
-- DPS (the revocation warns), the CRL and the hub still refuse them. 4000 characters hold a PEM device certificate
-- with an RSA 8192 key (about 2,100); the issuer stores NULL for anything longer. NVARCHAR(4000), not MAX: the
-- subset of T-SQL that also runs on SQLite through the SQLite3 ODBC driver (README.md beside this file).

ALTER TABLE certificates ADD certificate_pem NVARCHAR(4000) NULL;
