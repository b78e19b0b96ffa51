"""``jemc-infer serve``: a search service and page over an index (FastAPI + uvicorn)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from jemc_infer.cli._common import echo_err, fail, handle_errors, ray_cluster

app = typer.Typer()


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@app.command()
@handle_errors
def serve(
    index: Annotated[Path, typer.Option(help="Index directory.")] = Path("jemc-index"),
    model: Annotated[Path | None, typer.Option(help="Model bundle (else $JEMC_MODEL, the index's model, the demo bundle).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    token: Annotated[str | None, typer.Option(envvar="JEMC_TOKEN", help="Bearer token every endpoint but /healthz requires "
                                              "(else $JEMC_TOKEN).")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Allow a non-loopback --host without a token.")] = False,
    root: Annotated[list[Path] | None, typer.Option(help="A folder whose videos may be served (repeatable; default: the "
                                                    "deepest folder holding every indexed video).")] = None,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="Largest request body.")] = 64 * 1024,
    max_text_chars: Annotated[int, typer.Option(min=1, help="Longest text.")] = 1000,
    max_batch: Annotated[int, typer.Option(min=1, help="Most texts in one request.")] = 64,
    max_k: Annotated[int, typer.Option(min=1, help="Most results per text.")] = 100,
    backend: Annotated[str, typer.Option(help="Text engine: auto, tensorrt, onnxruntime or torch.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (cuda: the text encoder and the top-k search on the GPU).")] = "auto",
    ray: Annotated[str | None, typer.Option(
        "--ray", metavar="ADDRESS", help="Search on a Ray cluster, the index's shards split across actors (the same hits): "
        "local (start one here), auto (the one `ray start` runs here), HOST:PORT or ray://HOST:PORT. Every node needs "
        "the index at the same path.")] = None,
    ray_actors: Annotated[int | None, typer.Option(min=1, help="With --ray: shard actors (default: one per GPU, else half "
                                                   "the cluster's CPUs).")] = None,
) -> None:
    """Serve the index over HTTP, with a search page at http://HOST:PORT/.

    Endpoints: POST /search; GET /videos/ID, /videos/ID/file, /videos/ID/thumbnail?t=SECONDS,
    /videos/ID/similar (more like this); /healthz; the OpenAPI schema at /docs. Example:
    jemc-infer serve --index demo/index --model demo/models/jemc
    """
    if not is_loopback(host) and not token and not insecure:
        raise fail(f"--host | {host} is not loopback and no token is set | expected --token (or $JEMC_TOKEN) to serve "
                   "beyond this machine, or --insecure to serve it to anyone who can reach it")
    import uvicorn  # a missing one: handle_errors names the extra to install

    from jemc_infer.serve.app import Limits, create_app
    from jemc_infer.serve.library import Library

    cluster = ray_cluster(ray, ray_actors)
    limits = Limits(max_body_bytes=max_body_bytes, max_text_chars=max_text_chars, max_batch=max_batch, max_k=max_k)
    library = Library(index, model, roots=root, backend=backend, device=device, cluster=cluster)
    try:
        snap = library.snapshot()
        echo_err(f"{library.engine_why}; {len(snap.videos)} videos from {index}"
                 + (f"; searched on Ray ({ray}, {library.ray_actors} shard actors)" if cluster else ""))
        if not is_loopback(host) and not token:
            echo_err(f"warning: serving {host} without a token (--insecure): anyone who can reach it can search and watch")
        shown = f"[{host}]" if ":" in host else host
        echo_err(f"serving on http://{shown}:{port}/" + (" (token required: open /?token=TOKEN in a browser)" if token else ""))
        uvicorn.run(create_app(library, limits, token), host=host, port=port, log_level="warning")
    finally:
        library.close()
