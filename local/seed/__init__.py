"""Seed data for the local stack: schema and reference data in SQL, templates in Blob, the local PKI."""
