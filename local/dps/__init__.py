"""A DPS stand-in: enrollments, X.509 chain validation, the custom allocation webhook call, device creation."""
