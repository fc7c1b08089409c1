"""The extension's HTTP routes in the WebUI (with --api or --nowebui, behind --api-auth when set): prompt
evolution's (lib_pinning.evolution_routes, over lib_pinning.webui.evolution's service) and

`POST /prompt-pinning/v1/tokens`: how the loaded model's own tokenizer reads a prompt, token by token.

For users it shows which tokens a (pinned) prompt becomes and the emphasis weight each gets; the live tests
use it to check that every pinned word reaches the text encoder whole, with its intended weight (the
original extension split words into BPE pieces such as "compu"/"ter" that A1111 then re-tokenized).
"""

from __future__ import annotations

from secrets import compare_digest

from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from modules import shared
from pydantic import BaseModel

from ..evolution_routes import evolution_router
from . import breeding, evolution, text_model

TOKENS_ROUTE = "/prompt-pinning/v1/tokens"


class TokensRequest(BaseModel):
    prompt: str


def tokens(request: TokensRequest) -> dict:
    encoder = text_model.prompt_tokenizer()
    if encoder is None:
        raise HTTPException(status_code=409, detail="no model with a CLIP prompt tokenizer is loaded (on Forge, the "
                                                    "model loads with the first generation)")
    batch_chunks, token_count = encoder.process_texts([request.prompt])
    chunks = [{"tokens": [int(t) for t in chunk.tokens], "multipliers": [float(m) for m in chunk.multipliers]}
              for chunk in batch_chunks[0]]
    return {"chunks": chunks, "token_count": int(token_count)}


def _api_auth(credentials: HTTPBasicCredentials = Depends(HTTPBasic())) -> bool:
    """The same check as A1111's own API routes under --api-auth (user:password pairs, comma-separated)."""
    users = dict(pair.split(":", 1) for pair in shared.cmd_opts.api_auth.split(","))
    if credentials.username in users and compare_digest(credentials.password, users[credentials.username]):
        return True
    raise HTTPException(status_code=401, detail="Incorrect username or password", headers={"WWW-Authenticate": "Basic"})


def add_routes(_demo, app: FastAPI) -> None:
    """`script_callbacks.on_app_started` hook: where the API is served (--api, --nowebui), behind --api-auth
    when set, once per app."""
    if not (getattr(shared.cmd_opts, "api", False) or getattr(shared.cmd_opts, "nowebui", False)):
        return
    if any(getattr(route, "path", None) == TOKENS_ROUTE for route in app.routes):
        return  # "Reload UI" calls the hook again
    dependencies = [Depends(_api_auth)] if getattr(shared.cmd_opts, "api_auth", None) else []
    app.add_api_route(TOKENS_ROUTE, tokens, methods=["POST"], response_model=None, dependencies=dependencies)
    app.include_router(evolution_router(evolution.service(), breeding.breed), dependencies=dependencies)
