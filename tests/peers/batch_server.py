"""A loopback peer of the OpenAI Batch API: `/v1/files` (multipart upload, content download) and
`/v1/batches` (create, retrieve, cancel), with scripted job outcomes.

Each request line of an uploaded batch file is answered by `answer(body) -> (status, body)`, a
function of what the client sent (tests script fixed replies; nothing here reads ground truth).
Job outcomes are scripted per submitted job, in order:
  "completed"   every line answered
  "partial"     lines whose `answer` returns a non-200 status go to the error file
  "drop:K"      completed, but the output file lacks its last K lines (a damaged output file)
  "expired:K"   expired after answering only the first K lines
  "failed"      the input file failed validation (no output at all)
A job reports `in_progress` for `polls` retrieves before it ends.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def completion(text: str, prompt_tokens: int = 10) -> dict[str, Any]:
    return {
        "id": "chatcmpl-batch", "object": "chat.completion", "created": int(time.time()), "model": "peer",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()), "total_tokens": prompt_tokens + len(text.split())},
    }


class BatchPeer:
    """Run with `with BatchPeer(answer) as peer:`; `peer.base_url` is the client's base URL."""

    def __init__(self, answer: Answer, outcomes: list[str] | None = None, polls: int = 1) -> None:
        self.answer = answer
        self.outcomes = deque(outcomes or [])
        self.polls = polls
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.retrieves: dict[str, int] = {}
        self.uploads: list[list[dict[str, Any]]] = []  # the parsed lines of every uploaded batch file
        self.created: list[str] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                peer._dispatch(self, "POST", body)

            def do_GET(self) -> None:
                peer._dispatch(self, "GET", b"")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> BatchPeer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- routing -----------------------------------------------------------------------------------
    def _dispatch(self, handler: BaseHTTPRequestHandler, method: str, body: bytes) -> None:
        path = handler.path.split("?")[0]
        with self._lock:
            if method == "POST" and path == "/v1/files":
                status, payload = 200, self._upload(handler.headers.get("Content-Type", ""), body)
            elif method == "GET" and path.startswith("/v1/files/") and path.endswith("/content"):
                file_id = path.split("/")[3]
                return self._send_raw(handler, self.files[file_id]["content"])
            elif method == "POST" and path == "/v1/batches":
                status, payload = 200, self._create(json.loads(body))
            elif method == "GET" and path.startswith("/v1/batches/"):
                status, payload = 200, self._retrieve(path.split("/")[3])
            elif method == "POST" and path.startswith("/v1/batches/") and path.endswith("/cancel"):
                batch = self.batches[path.split("/")[3]]
                batch["status"] = "cancelled"
                status, payload = 200, batch
            else:
                status, payload = 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error", "code": None}}
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _send_raw(self, handler: BaseHTTPRequestHandler, data: bytes) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _new_file(self, content: bytes, purpose: str, name: str) -> dict[str, Any]:
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                               "filename": name, "purpose": purpose, "status": "processed", "content": content}
        return {k: v for k, v in self.files[file_id].items() if k != "content"}

    def _upload(self, content_type: str, body: bytes) -> dict[str, Any]:
        message = BytesParser(policy=default_policy).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[name] = (part.get_filename(), part.get_payload(decode=True))
        filename, content = fields["file"]
        purpose = fields["purpose"][1].decode()
        self.uploads.append([json.loads(line) for line in content.splitlines() if line.strip()])
        return self._new_file(content, purpose, filename or "upload.jsonl")

    def _create(self, params: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"batch_{next(self._ids)}"
        outcome = self.outcomes.popleft() if self.outcomes else "completed"
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": params["endpoint"], "input_file_id": params["input_file_id"],
            "completion_window": params["completion_window"], "status": "validating", "created_at": int(time.time()),
            "metadata": params.get("metadata"), "output_file_id": None, "error_file_id": None, "errors": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "_outcome": outcome,
        }
        self.created.append(batch_id)
        self.retrieves[batch_id] = 0
        return self._public(self.batches[batch_id])

    def _retrieve(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        self.retrieves[batch_id] += 1
        if batch["status"] in ("validating", "in_progress"):
            if self.retrieves[batch_id] <= self.polls:
                batch["status"] = "in_progress"
            else:
                self._finish(batch)
        return self._public(batch)

    def _finish(self, batch: dict[str, Any]) -> None:
        outcome = batch["_outcome"]
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]]["content"].splitlines() if line.strip()]
        if outcome == "failed":
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_json_line", "message": "line 1 is not valid", "line": 1, "param": None}]}
            return
        keep = len(lines)
        if outcome.startswith("expired:"):
            keep = int(outcome.split(":")[1])
        answered = lines[:keep]
        output, errors = [], []
        for n, line in enumerate(answered):
            status, body = self.answer(line["body"])
            record = {"id": f"batch_req_{n}", "custom_id": line["custom_id"], "response": {"status_code": status, "request_id": f"req_{n}", "body": body}, "error": None}
            (output if status == 200 else errors).append(record)
        if outcome.startswith("drop:"):
            output = output[: len(output) - int(outcome.split(":")[1])]
        batch["status"] = "expired" if outcome.startswith("expired:") else "completed"
        batch["request_counts"] = {"total": len(lines), "completed": len([o for o in output]), "failed": len(errors)}
        if output:
            batch["output_file_id"] = self._new_file("".join(json.dumps(o) + "\n" for o in output).encode(), "batch_output", "out.jsonl")["id"]
        if errors:
            batch["error_file_id"] = self._new_file("".join(json.dumps(e) + "\n" for e in errors).encode(), "batch_output", "err.jsonl")["id"]

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}
