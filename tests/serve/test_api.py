"""The search service's API on a real small index: the schema, every limit and error (4xx JSON in
the "what | got | expected" form), files only from the collection, range requests, thumbnails,
the token, and searches while ``embed`` adds shards."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import av
import pytest
from support.corpus import index_of
from support.served import copy_collection, embed_into, make_videos
from typer.testing import CliRunner

from jemc_infer.serve.app import Limits
from jemc_infer.serve.library import Library


def assert_error(r, status: int, *parts: str) -> None:  # noqa: ANN001
    """A JSON error of this status, "what | got | expected …", naming ``parts``; never a traceback."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    message = r.json()["error"]
    what, got, expected = message.split(" | ", 2)
    assert what and got and expected.startswith("expected "), message
    assert "Traceback" not in r.text
    for p in parts:
        assert p in message, (p, message)


def test_schema_lists_every_endpoint(served_index: Path, make_client) -> None:  # noqa: ANN001
    schema = make_client(served_index).get("/openapi.json").json()
    assert set(schema["paths"]) == {"/healthz", "/search", "/videos/{video_id}", "/videos/{video_id}/thumbnail", "/videos/{video_id}/file",
                                    "/videos/{video_id}/similar"}
    assert {"text", "texts", "k", "weights"} <= set(schema["components"]["schemas"]["SearchRequest"]["properties"])
    assert "moment" in schema["components"]["schemas"]["HitOut"]["properties"]


def test_search_one_text_and_a_batch(served_index: Path, make_client) -> None:  # noqa: ANN001
    c = make_client(served_index)
    r = c.post("/search", json={"text": "a man is cooking", "k": 3})
    assert r.status_code == 200, r.text
    hits = r.json()["results"][0]["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for h in hits:
        assert h["path"].startswith("../videos/v") and h["duration"] > 2.9
        m = h["moment"]  # the best-matching window (new indexes keep them)
        assert 0 <= m["start"] < m["end"] <= h["duration"] + 1e-6
        assert h["file"] == f"/videos/{h['id']}/file" and h["thumbnail"] == f"/videos/{h['id']}/thumbnail?t={m['start']:g}"
    r = c.post("/search", json={"texts": ["a man is cooking", "a dog runs"], "k": 10, "weights": {"object": 0}})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["text"] for x in results] == ["a man is cooking", "a dog runs"]
    assert all(len(x["hits"]) == 4 for x in results)  # k above the index's size: every video once
    assert c.get("/healthz").json()["videos"] == 4


def test_video_metadata(served_index: Path, make_client) -> None:  # noqa: ANN001
    c = make_client(served_index)
    hit = c.post("/search", json={"text": "a man", "k": 1}).json()["results"][0]["hits"][0]
    v = c.get(f"/videos/{hit['id']}").json()
    assert v["id"] == hit["id"] and v["path"] == hit["path"] and v["duration"] == hit["duration"]
    assert (v["width"], v["height"], v["fps"], v["codec"]) == (64, 48, 25.0, "h264")
    assert v["size"] == (served_index / v["path"]).stat().st_size


def test_hits_and_moments_are_those_of_query(served_index: Path, make_client) -> None:  # noqa: ANN001
    """The service answers as ``jemc-infer query`` does: same videos, scores and moments."""
    from jemc_infer.query import query

    got = make_client(served_index).post("/search", json={"text": "a man is cooking", "k": 4}).json()["results"][0]["hits"]
    (want,), _ = query(served_index, ["a man is cooking"], k=4, model=None, backend="onnxruntime", device="cpu")
    assert [h["id"] for h in got] == [h.id for h in want]
    assert [h["score"] for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
    assert [(h["moment"]["start"], h["moment"]["end"]) for h in got] == [h.moment for h in want]


def test_more_like_this(served_index: Path, make_client) -> None:  # noqa: ANN001
    c = make_client(served_index)
    first = c.post("/search", json={"text": "a man", "k": 1}).json()["results"][0]["hits"][0]
    r = c.get(f"/videos/{first['id']}/similar", params={"k": 10})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 3 and first["id"] not in [h["id"] for h in hits]  # every other video, itself left out
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert c.get("/videos/999/similar").status_code == 404
    for params, part in (({"k": 0}, "1 to 100"), ({"weights": "audio=1"}, "unknown space"), ({"weights": "object"}, "name=number")):
        r = c.get(f"/videos/{first['id']}/similar", params=params)
        assert r.status_code == 400 and part in r.json()["error"], r.text


@pytest.mark.parametrize(("body", "status", "parts"), [
    ({"text": "x" * 1001}, 400, ("text 1", "1001 characters", "at most 1000")),
    ({"texts": ["a cat"] * 65}, 400, ("texts", "65 sentences", "at most 64")),
    ({"texts": []}, 400, ("texts", "empty list")),
    ({"text": "a cat", "k": 101}, 400, ("k", "101", "1 to 100")),
    ({"text": "a cat", "k": 0}, 400, ("k", "0", "1 to 100")),
    ({"text": "a cat", "k": "many"}, 422, ("k", "'many'", "valid integer")),
    ({"text": "a cat", "texts": ["a dog"]}, 400, ("both text and texts",)),
    ({}, 400, ("no text", "exactly one of")),
    ({"text": "   "}, 400, ("empty text",)),
    ({"text": "a cat", "colour": "red"}, 422, ("colour", "only the fields")),
    ({"text": "a cat", "weights": {"audio": 1}}, 400, ("weights", "unknown space 'audio'", "object")),
    ({"text": "a cat", "weights": {"object": -1}}, 400, ("weights", "object=-1", ">= 0")),
    ({"text": 7}, 422, ("text", "7", "valid string")),
    ([1, 2], 422, ("list", "valid dictionary")),
])
def test_search_limits_and_errors(served_index: Path, make_client, body, status: int, parts: tuple[str, ...]) -> None:  # noqa: ANN001
    assert_error(make_client(served_index).post("/search", json=body), status, *parts)


def test_limits_are_configurable(served_index: Path, make_client) -> None:  # noqa: ANN001
    c = make_client(served_index, limits=Limits(max_body_bytes=200, max_text_chars=10, max_batch=2, max_k=3))
    assert_error(c.post("/search", json={"text": "a" * 11}), 400, "at most 10")
    assert_error(c.post("/search", json={"texts": ["a", "b", "c"]}), 400, "at most 2 per request")
    assert_error(c.post("/search", json={"text": "a", "k": 4}), 400, "1 to 3")
    assert c.post("/search", json={"texts": ["a man", "a dog"], "k": 3}).status_code == 200
    big = {"text": "a man", "pad": "x" * 300}
    assert_error(c.post("/search", json=big), 413, "request body", "at most 200 bytes")
    # no Content-Length (chunked): counted while it arrives
    chunks = (b'{"text": "' + b"x" * 100 + b'"' if i == 0 else b" " * 100 for i in range(3))
    assert_error(c.post("/search", content=chunks, headers={"Content-Type": "application/json"}), 413, "at most 200 bytes")
    with pytest.raises(Exception, match=r"limits \| max_k=0 \| expected integers >= 1"):
        Limits(max_k=0)


def test_other_errors_are_json_4xx(served_index: Path, make_client) -> None:  # noqa: ANN001
    c = make_client(served_index)
    assert_error(c.post("/search", content=b"{not json", headers={"Content-Type": "application/json"}), 422, "body", "JSON object")
    infinite = b'{"text": "a cat", "weights": {"object": Infinity}}'  # Python's JSON reads it; a weight cannot be it
    assert_error(c.post("/search", content=infinite, headers={"Content-Type": "application/json"}), 400, "weights", "inf", "finite")
    assert_error(c.get("/nothing"), 404, "/nothing", "/search")
    assert_error(c.put("/search"), 405, "PUT /search", "POST")
    assert_error(c.get("/videos/abc"), 422, "video_id", "'abc'")
    for url in ("/videos/999", "/videos/999/file", "/videos/999/thumbnail", "/videos/-1"):
        assert_error(c.get(url), 404, "not in the index")
    hit = c.post("/search", json={"text": "a man", "k": 1}).json()["results"][0]["hits"][0]
    assert_error(c.get(f"/videos/{hit['id']}/thumbnail?t=-1"), 400, "t", ">= 0")
    assert_error(c.get(f"/videos/{hit['id']}/thumbnail?t=nan"), 400, "t")
    assert_error(c.get(f"/videos/{hit['id']}/thumbnail?t=60"), 400, "t | 60", "duration")
    assert_error(c.get(f"/videos/{hit['id']}/thumbnail?width=5000"), 400, "width", "16 to 640")
    assert_error(c.get(f"/videos/{hit['id']}/file", headers={"Range": "bytes=99999999-"}), 416, "range", "bytes=99999999-")
    assert_error(c.get(f"/videos/{hit['id']}/file", headers={"Range": "bytes=abc"}), 400, "range", "bytes=abc", "START-END")
    assert_error(c.get("/static/index.js"), 404, "static")


@pytest.mark.parametrize("url", [
    "/videos/../../etc/passwd", "/videos/..%2F..%2Fetc%2Fpasswd/file", "/videos/%2Fetc%2Fpasswd/file", "//etc/passwd",
    "/videos/1/../../../etc/passwd", "/static/..%2F..%2Fpyproject.toml", "/static/../app.py", "/videos/1/file/../../../../etc/passwd",
])
def test_traversal_urls_are_refused(served_index: Path, make_client, url: str) -> None:  # noqa: ANN001
    r = make_client(served_index).get(url)
    assert 400 <= r.status_code < 500 and "root:" not in r.text and "import" not in r.text
    assert_error(r, r.status_code)


def test_files_outside_the_collection_are_refused(served_index: Path, make_client, tmp_path: Path) -> None:  # noqa: ANN001
    ix = copy_collection(served_index, tmp_path)
    outside = make_videos(tmp_path / "outside", 1)
    c = make_client(ix)
    paths = {h["path"]: h["id"] for h in c.post("/search", json={"text": "a man", "k": 10}).json()["results"][0]["hits"]}
    # a video swapped for a symlink to a file outside the collection: refused, however it is reached
    (tmp_path / "videos" / "v1.mp4").unlink()
    (tmp_path / "videos" / "v1.mp4").symlink_to(outside / "v0.mp4")
    for suffix in ("/file", "/thumbnail?t=0", ""):
        assert_error(c.get(f"/videos/{paths['../videos/v1.mp4']}{suffix}"), 403, "outside the collection", str(tmp_path / "videos"))
    # …one to another video inside it is served (the collection may hold links)
    (tmp_path / "videos" / "v2.mp4").unlink()
    (tmp_path / "videos" / "v2.mp4").symlink_to("v0.mp4")
    r = c.get(f"/videos/{paths['../videos/v2.mp4']}/file")
    assert r.status_code == 200 and r.content == (tmp_path / "videos" / "v0.mp4").read_bytes()
    # a manifest path that climbs out (an absolute path, `..`): the same answer with explicit roots
    import sqlite3

    with sqlite3.connect(ix / "manifest.sqlite") as db:
        db.execute("UPDATE videos SET path = ? WHERE path = '../videos/v3.mp4'", (os.path.relpath("/etc/hostname", ix),))
    c = make_client(ix, roots=[tmp_path / "videos"])
    assert_error(c.get(f"/videos/{paths['../videos/v3.mp4']}/file"), 403, "outside the collection")
    assert c.get(f"/videos/{paths['../videos/v0.mp4']}/file").status_code == 200
    # a gone file: 404
    (tmp_path / "videos" / "v0.mp4").unlink()
    assert_error(c.get(f"/videos/{paths['../videos/v0.mp4']}/file"), 404, "is gone")


def test_range_requests_return_the_bytes_asked_for(served_index: Path, make_client) -> None:  # noqa: ANN001
    c = make_client(served_index)
    hit = c.post("/search", json={"text": "a man", "k": 1}).json()["results"][0]["hits"][0]
    data = (served_index / hit["path"]).read_bytes()
    full = c.get(hit["file"])
    assert full.status_code == 200 and full.content == data
    assert full.headers["accept-ranges"] == "bytes" and full.headers["content-type"] == "video/mp4"
    for header, lo, hi in (("bytes=0-99", 0, 99), ("bytes=1000-", 1000, len(data) - 1), ("bytes=-500", len(data) - 500, len(data) - 1),
                           (f"bytes=10-{len(data) + 50}", 10, len(data) - 1)):
        r = c.get(hit["file"], headers={"Range": header})
        assert r.status_code == 206, (header, r.status_code)
        assert r.content == data[lo:hi + 1]
        assert r.headers["content-range"] == f"bytes {lo}-{hi}/{len(data)}"


def _decode_jpeg(data: bytes):  # noqa: ANN202
    with av.open(io.BytesIO(data), format="mjpeg") as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


def test_thumbnail_is_a_jpeg_of_the_frame_at_t(served_index: Path, make_client) -> None:  # noqa: ANN001
    c = make_client(served_index)
    hit = c.post("/search", json={"text": "a man", "k": 1}).json()["results"][0]["hits"][0]
    for t, frame in ((0, 0), (0.5, 12), (1.0, 25), (2.0, 50 % 28)):
        r = c.get(f"/videos/{hit['id']}/thumbnail?t={t}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.content[:3] == b"\xff\xd8\xff" and r.content[-2:] == b"\xff\xd9"
        img = _decode_jpeg(r.content)
        assert img.shape == (48, 64, 3) and index_of(img) == frame, (t, index_of(img))
    small = _decode_jpeg(c.get(f"/videos/{hit['id']}/thumbnail?t=1&width=32").content)
    assert small.shape == (24, 32, 3)
    assert c.get(f"/videos/{hit['id']}/thumbnail?t=1").content == c.get(f"/videos/{hit['id']}/thumbnail?t=1.0").content  # cached


def test_token_is_required_when_set(served_index: Path, make_client) -> None:  # noqa: ANN001
    c = make_client(served_index, token="s3cret")
    assert c.get("/healthz").status_code == 200
    for method, url in (("POST", "/search"), ("GET", "/videos/1"), ("GET", "/videos/1/file"), ("GET", "/videos/1/thumbnail"),
                        ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/"), ("GET", "/static/app.js"), ("GET", "/nothing")):
        assert_error(c.request(method, url, json={"text": "a man"}), 401, "token")
        assert_error(c.request(method, url, json={"text": "a man"}, headers={"Authorization": "Bearer wrong"}), 401)
    r = c.post("/search", json={"text": "a man", "k": 1}, headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200
    # the page: /?token=… sets a cookie (and drops the token from the address), then images and video load
    r = c.get("/?token=s3cret", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/" and "jemc_token=s3cret" in r.headers["set-cookie"]
    assert "httponly" in r.headers["set-cookie"].lower()
    assert c.get("/videos/1/thumbnail").status_code == 200  # the client keeps the cookie
    c.cookies.clear()
    assert_error(c.get("/?token=wrong"), 401)


def test_page_and_assets_are_served(served_index: Path, make_client) -> None:  # noqa: ANN001
    c = make_client(served_index)
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="q"' in page.text and "<video" in page.text and "http" not in page.text.replace("http-equiv", "")
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        r = c.get(f"/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind) and "https://" not in r.text


def test_searches_during_an_embed_see_whole_shards_then_the_new_videos(served_index: Path, runtime_bundle: Path, make_client,
                                                                       tmp_path: Path) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    ix = copy_collection(served_index, tmp_path)
    client = make_client(ix)
    library: Library = client.app.state.library
    make_videos(tmp_path / "videos", 2, first=4)
    done, problems, searches = threading.Event(), [], []

    def writer() -> None:
        try:
            embed_into(tmp_path / "videos", ix, runtime_bundle)  # one shard per video: two commits
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            problems.append(f"embed: {err!r}")
        finally:
            done.set()

    def reader() -> None:
        c = TestClient(client.app)
        while not done.is_set():
            r = c.post("/search", json={"texts": ["a man is cooking", "a dog"], "k": 100})
            if r.status_code != 200:
                problems.append(f"{r.status_code}: {r.text}")
                continue
            snap = library.snapshot()
            live = {int(i) for s in snap.source.blocks for i in s.ids if i >= 0}
            if live != set(snap.videos):  # every row has its video and every video its row: one committed state
                problems.append(f"torn snapshot: rows {sorted(live)} videos {sorted(snap.videos)}")
            for res in r.json()["results"]:
                ids = [h["id"] for h in res["hits"]]
                if len(ids) != len(set(ids)) or len(ids) < 4:
                    problems.append(f"hits {ids}")
            searches.append(len(r.json()["results"][0]["hits"]))
            time.sleep(0.02)  # leave the embed some of the two cores

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not problems, problems[:5]
    assert searches and min(searches) >= 4 and len(set(searches)) >= 2  # searches ran before and during the commits
    hits = client.post("/search", json={"text": "a man", "k": 100}).json()["results"][0]["hits"]
    assert sorted(h["path"] for h in hits) == [f"../videos/v{i}.mp4" for i in range(6)]
    assert client.get("/healthz").json()["videos"] == 6
    new = next(h for h in hits if h["path"] == "../videos/v5.mp4")
    assert client.get(new["thumbnail"]).status_code == 200 and client.get(new["file"]).status_code == 200


def test_cli_refuses_a_public_host_without_a_token(served_index: Path, runtime_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jemc_infer.cli import app
    from jemc_infer.cli.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.3.4.5")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")
    monkeypatch.delenv("JEMC_TOKEN", raising=False)
    runner = CliRunner()
    args = ["serve", "--index", str(served_index), "--model", str(runtime_bundle)]
    r = runner.invoke(app, [*args, "--host", "0.0.0.0"])
    assert r.exit_code == 1
    assert "error: --host | 0.0.0.0 is not loopback and no token is set | expected --token" in r.stderr and "--insecure" in r.stderr
    checked = []

    def fake_run(served, host: str, port: int, **kw) -> None:  # noqa: ANN001 - what uvicorn would serve, checked while open
        from fastapi.testclient import TestClient

        assert (host, port) == ("0.0.0.0", 8123)
        c = TestClient(served)
        assert c.post("/search", json={"text": "a man"}).status_code == 401
        assert_error(c.post("/search", json={"text": "a man", "k": 6}, headers={"Authorization": "Bearer from-env"}), 400, "1 to 5")
        checked.append(True)

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", fake_run)
    monkeypatch.setenv("JEMC_TOKEN", "from-env")
    r = runner.invoke(app, [*args, "--host", "0.0.0.0", "--port", "8123", "--max-k", "5"])
    assert r.exit_code == 0, r.output
    assert checked and "token required" in r.stderr
    monkeypatch.delenv("JEMC_TOKEN")
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    r = runner.invoke(app, [*args, "--host", "0.0.0.0", "--insecure"])
    assert r.exit_code == 0 and "without a token (--insecure)" in r.stderr
    r = runner.invoke(app, ["serve", "--index", str(served_index.parent / "nowhere"), "--model", str(runtime_bundle)])
    assert r.exit_code == 1 and "no index here" in r.stderr


def test_the_service_runs_without_torch(served_index: Path, runtime_bundle: Path) -> None:
    import json
    import subprocess
    import sys

    support = Path(__file__).resolve().parents[1] / "support"
    out = subprocess.run([sys.executable, support / "block_imports.py", "torch,torchvision,tensorrt,pycuda", support / "serve_no_torch.py",
                          served_index, runtime_bundle], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch_loaded"] is False and result["statuses"] == [200, 206] and "onnxruntime" in result["why"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(served_index: Path, make_client) -> None:  # noqa: ANN001
    """Requests that wait together are searched in one pass; each still gets its own exact top k.

    Scores are compared to float32 rounding: one question is a matrix-vector product and a batch a
    matrix-matrix one, whose sums are added in another order (videos whose scores agree to the last
    bits may then swap places)."""
    from concurrent.futures import ThreadPoolExecutor

    c = make_client(served_index)
    texts = ("a man is cooking", "a dog runs", "people dance", "a cat")
    every = {t: {h["id"]: h for h in c.post("/search", json={"text": t, "k": 4}).json()["results"][0]["hits"]} for t in texts}
    asks = [{"text": t, "k": k} for t in texts for k in (1, 2, 4)] * 3
    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda a: c.post("/search", json=a).json()["results"][0]["hits"], asks))
    for ask, hits in zip(asks, together, strict=True):
        ref = every[ask["text"]]
        assert len(hits) == ask["k"] and [h["rank"] for h in hits] == list(range(1, ask["k"] + 1))
        for h in hits:
            assert h["score"] == pytest.approx(ref[h["id"]]["score"], abs=1e-5) and h["moment"] == ref[h["id"]]["moment"]
        worst = min(h["score"] for h in hits)
        assert all(r["score"] <= worst + 1e-5 for i, r in ref.items() if i not in {h["id"] for h in hits})
