"""The operator CLI `onboarding` (console script from pyproject.toml; `python -m cli` works too): explain,
preview, certs, alerts, health. Never deployed with the function app (.funcignore); the app never imports it."""
