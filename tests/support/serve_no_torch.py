"""Open the search service on an index and answer one search, one thumbnail and one range request
(run under ``block_imports.py`` with torch impossible to import); print what happened as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from jemc_infer.serve.app import create_app
from jemc_infer.serve.library import Library

index, model = map(Path, sys.argv[1:3])
library = Library(index, model)
client = TestClient(create_app(library))
hit = client.post("/search", json={"text": "a man is cooking", "k": 2}).json()["results"][0]["hits"][0]
statuses = [client.get(hit["thumbnail"]).status_code, client.get(hit["file"], headers={"Range": "bytes=0-9"}).status_code]
library.close()
print(json.dumps({"torch_loaded": any(m.split(".")[0] in ("torch", "torchvision") for m in sys.modules), "hit": hit["id"],
                  "statuses": statuses, "why": library.engine_why}))
