"""Certificate lifecycle: CSR signing, revocation and CRLs, expiry scan. Lands with its issue."""

import azure.functions as func

bp = func.Blueprint()
