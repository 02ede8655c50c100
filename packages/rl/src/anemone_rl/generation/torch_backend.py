"""The torch generation backend: batched sampling with a KV cache on CPU or GPU, with per-token logprobs.

Rows that finish (EOS, a stop token, a stop string) are dropped from the batch once a quarter of the rows
have finished, so long tails do not pay for the whole batch (not with `compile=True`, whose compiled decode
step keeps one batch size per generation).
"""

from __future__ import annotations

import torch

from anemone_rl.generation.base import Completion, SamplingParams
from anemone_rl.generation.decoders import build_decoder, left_pad
from anemone_rl.generation.sampling import sample_next


class TorchGenerator:
    """`GenerationBackend` over an HF causal LM held in this process (shared with the trainer if colocated).

    `matmul_dtype="bfloat16"` runs the weight matmuls in bf16 (fp32 accumulation; norms, attention, cache and
    logits stay fp32): on a CPU with AMX 2-4x the fp32 decode throughput at batch >= 8, at the cost of
    logprobs that differ from an fp32 trainer's by bf16 rounding (see `decoders.py`)."""

    def __init__(self, model: torch.nn.Module, tokenizer=None, eos_token_ids: list[int] | None = None,
                 fast: bool = True, pad_id: int | None = None, compile: bool = False,
                 matmul_dtype: str = "float32") -> None:
        self.model = model
        self.tokenizer = tokenizer
        if eos_token_ids is None:
            eos = getattr(model.generation_config, "eos_token_id", None) if hasattr(model, "generation_config") else None
            eos = eos if eos is not None else (tokenizer.eos_token_id if tokenizer is not None else None)
            eos_token_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        self.eos_token_ids = eos_token_ids
        self.pad_id = pad_id if pad_id is not None else (eos_token_ids[0] if eos_token_ids else 0)
        self.decoder = build_decoder(model, fast, compile, matmul_dtype)

    @torch.no_grad()
    def load_weights(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Copy new weights (HF names, as from `model.state_dict()`) into the model, then re-fuse."""
        params = dict(self.model.named_parameters(remove_duplicate=False))  # tied weights under both names
        params.update(dict(self.model.named_buffers(remove_duplicate=False)))
        for name, tensor in state_dict.items():
            params[name].copy_(tensor)
        self.decoder.refresh()

    def refresh(self) -> None:
        """The shared model's weights changed in place (colocated mode): rebuild fused copies."""
        self.decoder.refresh()

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        device = next(self.model.parameters()).device
        B = len(prompts)
        if B == 0:
            return []
        ids, valid = left_pad(prompts, self.pad_id, device)  # (B, P) each
        P = ids.shape[1]
        gen = torch.Generator(device=device).manual_seed(params.seed) if params.seed is not None else None
        stop_ids = set() if params.ignore_eos else set(self.eos_token_ids)
        stop_ids |= set(params.stop_token_ids)
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer: pass tokenizer= to TorchGenerator")

        was_training = self.model.training
        self.model.eval()
        dec = self.decoder
        dec.start(B, P + params.max_tokens)
        out_ids: list[list[int]] = [[] for _ in range(B)]
        out_lp: list[list[float]] = [[] for _ in range(B)]
        reason: list[str | None] = [None] * B
        rows = torch.arange(B)  # original index of each row still in the batch
        logits = dec.prefill(ids, valid)  # (B, V)
        for step in range(params.max_tokens):
            tokens, logps = sample_next(logits, params.temperature, params.top_k, params.top_p, gen)  # (B',)
            tok_list, lp_list = tokens.tolist(), logps.tolist()
            for j, r in enumerate(rows.tolist()):
                if reason[r] is not None:
                    continue
                out_ids[r].append(tok_list[j])
                out_lp[r].append(lp_list[j])
                if tok_list[j] in stop_ids:
                    reason[r] = "eos" if tok_list[j] in self.eos_token_ids else "stop"
                elif params.stop and self._hits_stop(out_ids[r], params.stop):
                    reason[r] = "stop"
            active = [j for j, r in enumerate(rows.tolist()) if reason[r] is None]
            if not active or step == params.max_tokens - 1:
                break
            if dec.compacts and len(active) <= 0.75 * len(rows):
                keep = torch.tensor(active, dtype=torch.long)
                dec.keep(keep.to(device))
                rows, tokens = rows[keep], tokens[keep.to(device)]
            logits = dec.decode(tokens)
        if was_training:
            self.model.train()
        outs = []
        for r in range(B):
            text = self.tokenizer.decode(out_ids[r], skip_special_tokens=True) if self.tokenizer is not None else None
            outs.append(Completion(out_ids[r], out_lp[r], reason[r] or "length", text))  # type: ignore[arg-type]
        return outs

    def _hits_stop(self, ids: list[int], stops: tuple[str, ...]) -> bool:
        # Decode only the tail: a stop string can span at most its length in tokens (>= 1 char per token).
        tail = self.tokenizer.decode(ids[-2 * max(len(s) for s in stops) - 4:])
        return any(s in tail for s in stops)

