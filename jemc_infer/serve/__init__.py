"""``jemc-infer serve``: the search service (torch-free): an HTTP API and a page over one index.

- ``library``: the bundle, the text engine and the index, opened once and shared by requests;
  index snapshots that follow ``embed`` without torn reads; files served only from the collection;
- ``thumbnail``: a frame at a time as a JPEG (PyAV);
- ``app``: the FastAPI app (routes, limits, errors as "what | got | expected", the bearer token);
- ``static/``: the page (plain HTML, CSS and JavaScript, shipped in the package).

FastAPI and uvicorn come with the ``serve`` extra: ``pip install 'jemc-infer[serve]'``.
"""
