"""DPS custom allocation webhook (POST /api/allocate). Functions land with the allocation issue."""

import azure.functions as func

bp = func.Blueprint()
