"""POST /api/allocate (auth level FUNCTION: DPS calls it with the function key).

The handler is imported on first call, not when the host indexes function_app: indexing happens on every cold
start, and the allocation modules (cryptography's X.509 among them) are not needed to list the functions.
"""

from __future__ import annotations

import azure.functions as func

bp = func.Blueprint()


@bp.function_name("allocate")
@bp.route(route="allocate", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def allocate(req: func.HttpRequest) -> func.HttpResponse:
    from allocation.service import allocate as handle

    return handle(req)
