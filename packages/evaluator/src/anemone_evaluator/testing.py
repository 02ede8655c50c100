"""Test helper: a minimal OpenAI-compatible HTTP server over a Hugging Face model, on 127.0.0.1.

For tests and benchmarks of endpoint targets (ours and lm-eval's `local-completions`), not for serving (use
anemone-export's server). It answers `GET /v1/models`, `POST /v1/completions` (text or token-id prompts, one
or a list; `echo` + `logprobs` returns the prompt's token log-probabilities plus one generated token, as vLLM
does) and `POST /v1/chat/completions`, greedy only, one model call at a time. Failures can be injected: the
next `fail_next` POSTs answer `fail_status` (a 429 burst by default), and prompts in `slow_once` are delayed
by `slow_s` seconds the first time; `refuse_lists` makes it answer 400 to a list of prompts (a server that
takes one prompt per request).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class OpenAIStubServer:
    def __init__(self, folder: str | Path, model_name: str = "tiny") -> None:
        import torch
        import transformers

        self.torch = torch
        self.tok = transformers.AutoTokenizer.from_pretrained(folder)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        self.model_name = model_name
        self.lock = threading.Lock()
        self.fail_next = 0
        self.fail_status = 429
        self.slow_once: set[str] = set()
        self.slow_s = 2.0
        self.refuse_lists = False
        self.posts = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _ids(self, prompt: str | list[int]) -> list[int]:
        return list(prompt) if isinstance(prompt, list) else self.tok.encode(prompt, add_special_tokens=False)

    def echo(self, prompt: str | list[int], max_tokens: int) -> dict[str, Any]:
        torch = self.torch
        ids = self._ids(prompt)
        with self.lock, torch.inference_mode():
            logp = torch.log_softmax(self.model(torch.tensor([ids])).logits[0].float(), -1)  # (T, V)
        if max_tokens > 0:  # one generated token after the prompt, as vLLM returns with echo
            ids = ids + [int(logp[-1].argmax())]
        names: list[str] = list(self.tok.convert_ids_to_tokens(ids))
        offsets = [len(self.tok.decode(ids[:t])) for t in range(len(ids))]
        token_logprobs: list[float | None] = [None]
        top: list[dict[str, float] | None] = [None]
        for t in range(1, len(ids)):
            token_logprobs.append(logp[t - 1, ids[t]].item())
            best = int(logp[t - 1].argmax())
            top.append({str(self.tok.convert_ids_to_tokens(best)): logp[t - 1, best].item()})
        return {"tokens": names, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}

    def generate(self, prompt: str | list[int], max_tokens: int, stop: list[str] | None) -> str:
        torch = self.torch
        ids = torch.tensor([self._ids(prompt)])
        with self.lock, torch.inference_mode():
            out = self.model.generate(ids, max_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=self.tok.pad_token_id)
        text = str(self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
        for s in stop or []:
            if s:
                text = text.split(s)[0]
        return text

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["prompt"]
        batch = prompt if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else [prompt]
        choices = []
        for i, p in enumerate(batch):
            if body.get("echo"):
                text = p if isinstance(p, str) else self.tok.decode(p)
                choices.append({"index": i, "text": text, "logprobs": self.echo(p, int(body.get("max_tokens", 1)))})
            else:
                stop = body.get("stop")
                stop = [stop] if isinstance(stop, str) else stop
                choices.append({"index": i, "text": self.generate(p, int(body.get("max_tokens", 16)), stop)})
        return {"object": "text_completion", "model": self.model_name, "choices": choices}

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = str(self.tok.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True))
        stop = body.get("stop")
        text = self.generate(prompt, int(body.get("max_tokens", 16)), [stop] if isinstance(stop, str) else stop)
        return {"object": "chat.completion", "model": self.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def _handler(server: OpenAIStubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
            self._send(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with server.lock:
                server.posts += 1
                failing = server.fail_next > 0
                server.fail_next -= int(failing)
            if failing:
                return self._send(server.fail_status, {"error": {"message": "injected failure"}})
            prompt = body.get("prompt")
            if isinstance(prompt, str) and prompt in server.slow_once:
                server.slow_once.discard(prompt)
                time.sleep(server.slow_s)
            if self.path == "/v1/completions":
                listed = isinstance(prompt, list) and bool(prompt) and not isinstance(prompt[0], int)
                if server.refuse_lists and listed:
                    return self._send(400, {"error": {"message": "prompt must be a string"}})
                return self._send(200, server.completions(body))
            if self.path == "/v1/chat/completions":
                return self._send(200, server.chat(body))
            self._send(404, {"error": {"message": "not found"}})

    return Handler
