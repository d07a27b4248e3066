"""Key Vault's error shape: `{"error": {"code", "message", "innererror"?}}` with the service's status codes.

azure-core maps the status to its exception types (404 -> ResourceNotFoundError, 401 ->
ClientAuthenticationError...) and shows code/message, so the product's error handling sees what Azure sends.
"""

from __future__ import annotations

NOT_FOUND_HELP = (
    "If you recently deleted this {kind} you may be able to recover it using the correct recovery command. "
    "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
)

NOT_FOUND_CODES = {"secrets": "SecretNotFound", "keys": "KeyNotFound", "certificates": "CertificateNotFound"}
KIND = {"secrets": "secret", "keys": "key", "certificates": "certificate"}


class KeyVaultError(Exception):
    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner

    def body(self) -> dict:
        error: dict = {"code": self.code, "message": self.message}
        if self.inner:
            error["innererror"] = {"code": self.inner}
        return {"error": error}


def bad_parameter(message: str, inner: str | None = None) -> KeyVaultError:
    return KeyVaultError(400, "BadParameter", message, inner)


def not_found(collection: str, name: str, version: str | None = None) -> KeyVaultError:
    kind = KIND[collection]
    ident = f"{name}/{version}" if version else name
    return KeyVaultError(
        404,
        NOT_FOUND_CODES[collection],
        f"A {kind} with (name/id) {ident} was not found in this key vault. " + NOT_FOUND_HELP.format(kind=kind),
    )


def forbidden(message: str, inner: str | None = None) -> KeyVaultError:
    return KeyVaultError(403, "Forbidden", message, inner)


def conflict(message: str, inner: str | None = None) -> KeyVaultError:
    return KeyVaultError(409, "Conflict", message, inner)
