"""Local Key Vault emulator: secrets, keys (sign/verify) and certificate import for the production SDKs.

Run it with `python -m local.keyvault --state-dir .local --port 8450 --identity-port 8449`, or build the ASGI
app with create_app(state_dir, identity_signing_key) and serve it with local.serve.
"""

from local.keyvault.app import create_app

__all__ = ["create_app"]
