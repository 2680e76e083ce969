"""astrai.server: the OpenAI-compatible HTTP server and the `astrai` command line.

`create_app(ServerConfig(...))` builds the FastAPI app (model loaded in the background);
`create_app(config, engine=engine)` serves an Engine that already exists.
"""

from astrai.server.app import create_app
from astrai.server.config import ServerConfig
from astrai.server.errors import APIError
from astrai.server.metrics import ServerMetrics

__all__ = ["APIError", "ServerConfig", "ServerMetrics", "create_app"]
