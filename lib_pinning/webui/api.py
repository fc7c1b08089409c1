"""`POST /prompt-pinning/v1/tokens`: how the loaded model's own tokenizer reads a prompt, token by token.

For users it shows which tokens a (pinned) prompt becomes and the emphasis weight each gets; the live tests
use it to check that every pinned word reaches the text encoder whole, with its intended weight (the
original extension split words into BPE pieces such as "compu"/"ter" that A1111 then re-tokenized).
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from modules import shared
from pydantic import BaseModel

TOKENS_ROUTE = "/prompt-pinning/v1/tokens"


class TokensRequest(BaseModel):
    prompt: str


def tokens(request: TokensRequest) -> dict:
    model = getattr(shared, "sd_model", None)
    encoder = getattr(model, "cond_stage_model", None)
    if not hasattr(encoder, "process_texts"):
        raise HTTPException(status_code=409, detail="the loaded model has no A1111 prompt tokenizer")
    batch_chunks, token_count = encoder.process_texts([request.prompt])
    chunks = [{"tokens": [int(t) for t in chunk.tokens], "multipliers": [float(m) for m in chunk.multipliers]}
              for chunk in batch_chunks[0]]
    return {"chunks": chunks, "token_count": int(token_count)}


def add_routes(_demo, app: FastAPI) -> None:
    """`script_callbacks.on_app_started` hook; adds the route once per app ("Reload UI" calls it again)."""
    if any(getattr(route, "path", None) == TOKENS_ROUTE for route in app.routes):
        return
    app.add_api_route(TOKENS_ROUTE, tokens, methods=["POST"], response_model=None)
