"""A tiny in-process Confluent Schema Registry: just the calls the framer makes, plus GET by id
so tests can resolve the ids they find in framed values."""
from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeSchemaRegistry:
    def __init__(self) -> None:
        self.schemas: dict[int, dict] = {}               # id -> {"schema", "schemaType"}
        self.subjects: dict[str, list[int]] = {}         # subject -> ids, one per version
        self.calls: list[tuple[str, str]] = []
        self.auth: list[str | None] = []
        self.read_only = False
        self._lock = threading.Lock()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, code: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                registry._record("GET", self.path, self.headers.get("Authorization"))
                path = urllib.parse.urlsplit(self.path).path
                if path == "/subjects":
                    return self._send(200, sorted(registry.subjects))
                if path.startswith("/schemas/ids/"):
                    sid = int(path.rsplit("/", 1)[1])
                    if sid in registry.schemas:
                        return self._send(200, registry.schemas[sid])
                    return self._send(404, {"error_code": 40403, "message": "Schema not found"})
                return self._send(404, {"error_code": 404, "message": "not found"})

            def do_POST(self):
                registry._record("POST", self.path, self.headers.get("Authorization"))
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                parts = urllib.parse.urlsplit(self.path).path.split("/")
                if len(parts) == 4 and parts[1] == "subjects" and parts[3] == "versions":
                    if registry.read_only:
                        return self._send(422, {"error_code": 42205, "message": "read-only mode"})
                    return self._send(200, {"id": registry.register(urllib.parse.unquote(parts[2]), body)})
                if len(parts) == 3 and parts[1] == "subjects":
                    sid = registry.find(urllib.parse.unquote(parts[2]), body)
                    if sid is None:
                        return self._send(404, {"error_code": 40403, "message": "Schema not found"})
                    return self._send(200, {"subject": parts[2], "id": sid, "version": 1, "schema": body["schema"]})
                return self._send(404, {"error_code": 404, "message": "not found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _record(self, method: str, path: str, auth: str | None) -> None:
        with self._lock:
            self.calls.append((method, path))
            self.auth.append(auth)

    def register(self, subject: str, body: dict) -> int:
        with self._lock:
            entry = {"schema": body["schema"], "schemaType": body.get("schemaType", "AVRO")}
            sid = next((i for i, s in self.schemas.items() if s == entry), None)
            if sid is None:
                sid = len(self.schemas) + 1
                self.schemas[sid] = entry
            versions = self.subjects.setdefault(subject, [])
            if sid not in versions:
                versions.append(sid)
            return sid

    def find(self, subject: str, body: dict) -> int | None:
        with self._lock:
            for sid in self.subjects.get(subject, []):
                if self.schemas[sid]["schema"] == body["schema"]:
                    return sid
            return None

    def write_config(self, directory, **extra) -> str:
        """``<directory>/.confluent-schema.yaml`` in the reference's format; returns the directory."""
        lines = ["schemaRegistry:", "  client:", f"    URL: {self.url}"]
        lines += [f"    {k}: {v}" for k, v in extra.items()]
        (directory / ".confluent-schema.yaml").write_text("\n".join(lines) + "\n")
        return str(directory)

    def start(self) -> FakeSchemaRegistry:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FakeSchemaRegistry:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
