"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1, for testing the LLM judge.

    with JudgeServer([Reply(status=429), Reply(content=valid_judgement(4))]) as srv:
        judge(..., base_url=srv.url)
        assert srv.count == 2

Replies are taken from `script` in order; when it runs out, `default` answers (a `Reply`, or a
callable `request_body -> Reply`; by default a valid judgement with every score 4). A script entry
may itself be a callable. Every request body is kept in `requests` (thread-safe).
Binds to 127.0.0.1 on a free port only; stdlib `http.server` in a daemon thread.
"""
from __future__ import annotations
import json, threading, time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FIELDS = ("causes", "symptoms", "treatment_process", "characteristics_of_illness", "treatment_effect")


def judgement(score: int = 4, fields=FIELDS) -> dict:
    "A judgement in the protocol's shape with every number equal to `score`."
    return {f: {"factual_consistency": score, "completeness": score, "clarity": score, "comment": f"{f} ok"} for f in fields}


def valid_judgement(score: int = 4) -> str:
    return json.dumps(judgement(score))


def fenced_judgement(score: int = 4) -> str:
    return "Here is my evaluation.\n```json\n" + json.dumps(judgement(score), indent=2) + "\n```\n"


MALFORMED = '{"causes": {"factual_consistency": 5, "completeness": 4,, "clarity": }'


@dataclass
class Reply:
    "One scripted answer: a chat completion with `content`, or an HTTP error `status`, after `delay` seconds."
    content: str | None = None
    status: int = 200
    delay: float = 0.0
    headers: dict = field(default_factory=dict)
    body: str | None = None        # raw body to send instead (e.g. a broken response)


class JudgeServer:
    def __init__(self, script=(), default=None):
        self.script = list(script)
        self.default = default if default is not None else Reply(valid_judgement(4))
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._httpd = None
        self._thread = None

    # -- the answers
    def _next(self, body: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            r = self.script.pop(0) if self.script else self.default
        if callable(r): r = r(body)
        return Reply(r) if isinstance(r, str) else r

    @property
    def count(self) -> int:
        with self._lock: return len(self.requests)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- lifecycle
    def start(self) -> "JudgeServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a): pass

            def _send(self, status: int, payload: str, headers: dict):
                data = payload.encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items(): self.send_header(k, str(v))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):   # the client gave up (timeout test)
                    pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, json.dumps({"object": "list", "data": [{"id": "scripted-judge", "object": "model"}]}), {})
                else: self._send(404, json.dumps({"error": {"message": "not found"}}), {})

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}), {}); return
                try: body = json.loads(raw or b"{}")
                except ValueError:
                    self._send(400, json.dumps({"error": {"message": "invalid JSON body"}}), {}); return
                r = server._next(body)
                if r.delay: time.sleep(r.delay)
                if r.body is not None: self._send(r.status, r.body, r.headers); return
                if r.status != 200:
                    err = {"error": {"message": f"scripted HTTP {r.status}", "type": "scripted", "code": r.status}}
                    self._send(r.status, json.dumps(err), r.headers); return
                resp = {"id": f"chatcmpl-{server.count}", "object": "chat.completion", "created": int(time.time()),
                        "model": body.get("model", "scripted-judge"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": r.content}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                self._send(200, json.dumps(resp), r.headers)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown(); self._httpd.server_close(); self._httpd = None

    def __enter__(self): return self.start()

    def __exit__(self, *exc): self.stop()
