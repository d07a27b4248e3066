"""Code shared by the feature folders: settings, identity, errors and one adapter per Azure service."""
