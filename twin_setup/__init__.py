"""DeviceCreated handler: template + facility overrides -> twin desired properties. Lands with its issue."""

import azure.functions as func

bp = func.Blueprint()
