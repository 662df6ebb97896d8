"""The admin listener (loopback by default): status, and the operator's API.

`build_admin_app` assembles the routes of each module here; see `app`.
"""

from relayd.edge.admin.app import build_admin_app
from relayd.edge.admin.context import AdminContext

__all__ = ["AdminContext", "build_admin_app"]
