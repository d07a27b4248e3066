"""The function app: creates func.FunctionApp and registers one Blueprint per feature folder. Nothing else."""

import azure.functions as func

from allocation import bp as allocation_bp
from capacity import bp as capacity_bp
from cert_lifecycle import bp as cert_lifecycle_bp
from funnel import bp as funnel_bp
from health import bp as health_bp
from twin_setup import bp as twin_setup_bp

app = func.FunctionApp()
for blueprint in (health_bp, allocation_bp, twin_setup_bp, cert_lifecycle_bp, capacity_bp, funnel_bp):
    app.register_functions(blueprint)
