"""The vLLM backend (GPU, `anemone-export[vllm]`): vLLM's own continuous batching behind the same Engine
interface as the torch and ONNX Runtime engines, so the app, validation and metrics are shared."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from anemone_core.errors import AnemoneError, require
from anemone_export.server.config import ServeConfig
from anemone_export.server.engine import Delta, Finished, GenRequest, TokenInfo, TokenTexts
from anemone_export.server.metrics import ServerMetrics


class VllmEngine:
    def __init__(self, cfg: ServeConfig) -> None:
        vllm = require("vllm", "uv pip install 'anemone-export[vllm]'", "the vllm serving backend")
        import torch
        import transformers

        from anemone_core.models import resolve_model

        if not torch.cuda.is_available():
            raise AnemoneError("--backend vllm needs a CUDA GPU and none is visible: use --backend torch or onnx on CPU")
        folder = resolve_model(cfg.model)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        self.texts = TokenTexts(self.tokenizer)
        args = vllm.AsyncEngineArgs(model=str(folder), max_model_len=cfg.max_model_len, max_num_seqs=cfg.max_batch_size)
        self.llm = vllm.AsyncLLMEngine.from_engine_args(args)
        self.max_model_len = cfg.max_model_len or self.llm.model_config.max_model_len
        self.name = cfg.served_model_name or (folder.name if cfg.model else "smollm2-135m-instruct")
        self.metrics = ServerMetrics()
        self._vllm = vllm

    def _params(self, req: GenRequest):
        return self._vllm.SamplingParams(
            max_tokens=max(req.max_tokens, 1), temperature=req.temperature, top_p=req.top_p, seed=req.seed,
            stop=req.stops or None, logprobs=req.logprobs, prompt_logprobs=req.logprobs if req.echo_logprobs else None,
            output_kind=self._vllm.sampling_params.RequestOutputKind.DELTA)

    def _info(self, tok: int, lps: dict | None) -> TokenInfo | None:
        if lps is None:
            return None
        top = sorted(lps.items(), key=lambda kv: -kv[1].logprob)
        return TokenInfo(tok, self.texts.text(tok), lps[tok].logprob if tok in lps else None,
                         [(self.texts.text(i), lp.logprob) for i, lp in top if i != tok or len(top) == 1])

    async def generate(self, req: GenRequest) -> AsyncIterator[Delta | Finished]:
        prompt_lp: list[TokenInfo] | None = None
        text, n_out = "", 0
        async for out in self.llm.generate({"prompt_token_ids": req.prompt_ids}, self._params(req),
                                           request_id=uuid.uuid4().hex):
            if req.echo_logprobs and prompt_lp is None and out.prompt_logprobs is not None:
                prompt_lp = [TokenInfo(req.prompt_ids[0], self.texts.text(req.prompt_ids[0]))]
                prompt_lp += [self._info(t, lp) for t, lp in zip(req.prompt_ids[1:], out.prompt_logprobs[1:],
                                                                  strict=True)]  # type: ignore[misc]
            comp = out.outputs[0]
            infos = [self._info(t, lp) for t, lp in zip(comp.token_ids, comp.logprobs or [None] * len(comp.token_ids),
                                                         strict=True)]
            n_out += len(comp.token_ids)
            text += comp.text
            if req.max_tokens > 0:
                yield Delta(comp.text, [i for i in infos if i is not None])
            if out.finished:
                self.metrics.tokens(n_out)
                yield Finished(comp.finish_reason or "stop", text if req.max_tokens > 0 else "", len(req.prompt_ids),
                               n_out if req.max_tokens > 0 else 0, prompt_lp)
                return

    def queue_depth(self) -> int:
        return 0

    def healthy(self) -> bool:
        return not self.llm.errored

    def close(self) -> None:
        self.llm.shutdown()
