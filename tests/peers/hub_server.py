"""A loopback peer of the Hugging Face Hub's HTTP API: enough for `HfApi.create_repo` and
`HfApi.upload_folder` / `create_commit` to push a dataset (huggingface_hub honours HF_ENDPOINT).

Endpoints (as huggingface_hub 2.x calls them):
- `POST /api/repos/create` {name, organization, type, visibility} → {url}; 409 when it exists;
- `POST /api/validate-yaml` {content, repoType} → {errors, warnings} (the card's front matter);
- `POST /api/{type}s/{repo}/preupload/{rev}` {files: [{path, size, sample}]} → {files: [{path,
  uploadMode, shouldIgnore}]}: "lfs" for files of `lfs_min_bytes` or more, else "regular";
- `POST /{type}s/{repo}.git/info/lfs/objects/batch` (LFS batch API) → the "basic" transfer with an
  upload href on this peer; `PUT /lfs-upload/{oid}?sig=…` (a presigned URL: no Authorization header, as with the Hub's
  storage) receives the bytes, checked against the oid;
- `POST /api/{type}s/{repo}/commit/{rev}` NDJSON: a header line, then `file` (base64 content) and
  `lfsFile` (oid of an uploaded object) lines → {commitUrl, commitOid}.
Every other request must carry `Authorization: Bearer <token>` equal to the peer's token (else 401).
What a commit adds lands in `repos[repo_id]` (path → bytes), so a test can load it back.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Repo:
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)


def _read_body(h: BaseHTTPRequestHandler) -> bytes:
    """The request body, with a Content-Length or chunked (httpx streams file uploads chunked)."""
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(h.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                h.rfile.readline()
                return b"".join(chunks)
            chunks.append(h.rfile.read(size))
            h.rfile.readline()
    length = int(h.headers.get("Content-Length") or 0)
    return h.rfile.read(length) if length else b""


class HubPeer:
    """Start with `with HubPeer(token) as hub:`; `hub.endpoint` is the base URL to use."""

    def __init__(self, token: str, lfs_min_bytes: int = 10 * 1024 * 1024) -> None:
        self.token = token
        self.lfs_min_bytes = lfs_min_bytes
        self.repos: dict[str, Repo] = {}
        self.objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.upload_modes: dict[str, str] = {}
        self._lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                return

            def do_GET(self) -> None:
                peer._handle(self, "GET")

            def do_POST(self) -> None:
                peer._handle(self, "POST")

            def do_PUT(self) -> None:
                peer._handle(self, "PUT")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- dispatch ------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        body = _read_body(h)
        path, _, query = h.path.partition("?")
        with self._lock:
            self.requests.append((method, path))
        presigned = path.startswith("/lfs-upload/") and query == f"sig={self._signature(path)}"
        if not presigned and h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(h, 401, {"error": "Invalid credentials in Authorization header"})
        routes = [
            ("POST", r"^/api/repos/create$", self._create),
            ("POST", r"^/api/validate-yaml$", self._validate_yaml),
            ("POST", r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$", self._preupload),
            ("POST", r"^/(?P<type>datasets|spaces)/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch$", self._lfs_batch),
            ("PUT", r"^/lfs-upload/(?P<oid>[0-9a-f]{64})$", self._lfs_put),
            ("POST", r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$", self._commit),
        ]
        for verb, pattern, handler in routes:
            match = re.match(pattern, path)
            if verb == method and match:
                status, payload = handler(match.groupdict(), body)
                return self._send(h, status, payload)
        self._send(h, 404, {"error": f"peer has no route for {method} {path}"})

    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        if status >= 400:
            h.send_header("X-Error-Message", str(payload.get("error", "")) if isinstance(payload, dict) else "")
        h.end_headers()
        h.wfile.write(data)

    # -- endpoints ---------------------------------------------------------------------------------
    def _create(self, _: dict, body: bytes) -> tuple[int, Any]:
        data = json.loads(body)
        repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else f"user/{data['name']}"
        with self._lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this dataset repo", "url": f"{self.endpoint}/datasets/{repo_id}"}
            self.repos[repo_id] = Repo(data.get("type") or "model", data.get("visibility") == "private")
        return 200, {"url": f"{self.endpoint}/datasets/{repo_id}", "name": repo_id, "id": repo_id}

    def _validate_yaml(self, _: dict, body: bytes) -> tuple[int, Any]:
        """The card's front matter must parse, and each config must name its data files."""
        import yaml

        content = json.loads(body)["content"]
        match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
        if not match:
            return 400, {"errors": [{"message": "README.md has no YAML front matter"}], "warnings": []}
        try:
            meta = yaml.safe_load(match.group(1)) or {}
        except yaml.YAMLError as exc:
            return 400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []}
        errors = [{"message": f"config {c.get('config_name')!r} has no data_files"} for c in meta.get("configs") or [] if not c.get("data_files")]
        return (400 if errors else 200), {"errors": errors, "warnings": []}

    def _repo(self, params: dict) -> Repo | None:
        return self.repos.get(params["repo"])

    def _preupload(self, params: dict, body: bytes) -> tuple[int, Any]:
        if self._repo(params) is None:
            return 404, {"error": "Repository not found"}
        files = []
        for item in json.loads(body)["files"]:
            mode = "lfs" if item["size"] >= self.lfs_min_bytes else "regular"
            self.upload_modes[item["path"]] = mode
            files.append({"path": item["path"], "uploadMode": mode, "shouldIgnore": False, "oid": None})
        return 200, {"files": files, "commitOid": None}

    def _lfs_batch(self, params: dict, body: bytes) -> tuple[int, Any]:
        data = json.loads(body)
        if "basic" not in data.get("transfers", ["basic"]):
            return 422, {"error": "peer only speaks the basic transfer"}
        objects = []
        for obj in data["objects"]:
            target = f"/lfs-upload/{obj['oid']}"
            href = f"{self.endpoint}{target}?sig={self._signature(target)}"  # presigned, like the Hub's storage URLs
            actions = None if obj["oid"] in self.objects else {"upload": {"href": href, "header": {}}}
            objects.append({"oid": obj["oid"], "size": obj["size"], **({"actions": actions} if actions else {})})
        return 200, {"transfer": "basic", "objects": objects}

    def _signature(self, target: str) -> str:
        return hashlib.sha256(f"{self.token}:{target}".encode()).hexdigest()[:32]

    def _lfs_put(self, params: dict, body: bytes) -> tuple[int, Any]:
        if hashlib.sha256(body).hexdigest() != params["oid"]:
            return 400, {"error": "content does not match its oid"}
        with self._lock:
            self.objects[params["oid"]] = body
        return 200, {}

    def _commit(self, params: dict, body: bytes) -> tuple[int, Any]:
        repo = self._repo(params)
        if repo is None:
            return 404, {"error": "Repository not found"}
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return 400, {"error": "commit payload must start with a header line"}
        added: dict[str, bytes] = {}
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "file":
                added[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                if value["oid"] not in self.objects:
                    return 400, {"error": f"LFS object {value['oid']} was never uploaded"}
                added[value["path"]] = self.objects[value["oid"]]
            else:
                return 400, {"error": f"peer does not support {line['key']} operations"}
        oid = hashlib.sha1(b"".join(sorted(k.encode() + v for k, v in added.items()))).hexdigest()
        with self._lock:
            repo.files.update(added)
            repo.commits.append(lines[0]["value"].get("summary", ""))
        return 200, {"commitUrl": f"{self.endpoint}/datasets/{params['repo']}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
