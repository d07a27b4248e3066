"""Local Azure Functions dev host: runs this repo's v2-model FunctionApp with Core Tools' URL layout.

Entry points: `python -m local.host` (see __main__) and `create_host_app(function_app, host_json, keys)`.
"""

from local.host.app import banner, create_host_app
from local.host.keys import HostKeys

__all__ = ["HostKeys", "banner", "create_host_app"]
