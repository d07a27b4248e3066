"""Certificate lifecycle: CSR signing with Key Vault CA keys, revocation and CRLs, expiry scan, renewals."""

from cert_lifecycle.functions import bp

__all__ = ["bp"]
