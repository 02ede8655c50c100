"""Shared fixtures: a tiny HF model folder, and a real OpenAI-compatible HTTP server on 127.0.0.1 backed by
it (echo+logprobs completions, completions, chat completions) with injectable 429 bursts and slow answers."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    from anemone_core.testing import save_tiny

    return save_tiny(tmp_path_factory.mktemp("tiny") / "tiny-llama")


class TinyOpenAIServer:
    def __init__(self, folder: Path) -> None:
        import transformers

        self.tok = transformers.AutoTokenizer.from_pretrained(folder)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.lock = threading.Lock()
        self.fail_next = 0  # answer this many POSTs with 429 (a burst)
        self.fail_status = 429
        self.slow_once: set[str] = set()  # prompts whose first answer is delayed by `slow_s`
        self.slow_s = 2.0
        self.posts = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- model work --------------------------------------------------------------------------------------------
    def echo(self, prompt: str) -> dict:
        enc = self.tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        with self.lock, torch.inference_mode():
            logp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), -1)  # (T, V)
        toks = self.tok.convert_ids_to_tokens(ids)
        token_logprobs, top = [None], [None]
        for t in range(1, len(ids)):
            token_logprobs.append(logp[t - 1, ids[t]].item())
            best = int(logp[t - 1].argmax())
            top.append({self.tok.convert_ids_to_tokens(best): logp[t - 1, best].item()})
        return {"tokens": toks, "token_logprobs": token_logprobs, "top_logprobs": top,
                "text_offset": [s for s, _ in enc["offset_mapping"]]}

    def generate(self, prompt: str, max_tokens: int, stop: list[str] | None) -> str:
        ids = torch.tensor([self.tok.encode(prompt, add_special_tokens=False)])
        with self.lock, torch.inference_mode():
            out = self.model.generate(ids, max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=self.tok.pad_token_id)
        text = self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        for s in stop or []:
            text = text.split(s)[0]
        return text

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if code == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})
                self._send(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.posts += 1
                    burst = server.fail_next > 0
                    server.fail_next -= int(burst)
                if burst:
                    return self._send(server.fail_status, {"error": {"message": "rate limited"}})
                key = body.get("prompt") or json.dumps(body.get("messages"))
                if key in server.slow_once:
                    server.slow_once.discard(key)
                    time.sleep(server.slow_s)
                if self.path == "/v1/completions":
                    if body.get("echo"):
                        choice = {"text": body["prompt"], "logprobs": server.echo(body["prompt"]), "index": 0}
                    else:
                        choice = {"text": server.generate(body["prompt"], body["max_tokens"], body.get("stop")),
                                  "index": 0}
                    return self._send(200, {"object": "text_completion", "choices": [choice]})
                if self.path == "/v1/chat/completions":
                    prompt = server.tok.apply_chat_template(body["messages"], tokenize=False,
                                                            add_generation_prompt=True)
                    text = server.generate(prompt, body["max_tokens"], body.get("stop"))
                    return self._send(200, {"object": "chat.completion", "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}}]})
                self._send(404, {"error": "not found"})

        return Handler


@pytest.fixture
def server(tiny_dir):
    torch.set_num_threads(1)
    srv = TinyOpenAIServer(tiny_dir)
    yield srv
    srv.close()
