"""The loaded model's text side, on A1111 and on Forge: its prompt tokenizer and its textual-inversion names.

A1111 keeps both on the model (`cond_stage_model.process_texts`, which SDXL's conditioner forwards too) and in
the hijack's embedding database. Forge has neither: each model carries text processing engines
(`text_processing_engine`, or `_l`/`_g` for two-encoder models), each with its own embedding database, and
before the first generation `shared.sd_model` is a stand-in without any.
"""

from __future__ import annotations

from modules import shared
from modules.sd_hijack import model_hijack  # Forge keeps a stand-in without embedding_db

FORGE_ENGINES = ("text_processing_engine", "text_processing_engine_l", "text_processing_engine_g")


def _forge_engines(model) -> list:
    return [engine for engine in (getattr(model, name, None) for name in FORGE_ENGINES) if engine is not None]


def prompt_tokenizer():
    """The loaded model's object whose `process_texts([prompt])` gives its 75-token chunks, or None."""
    model = getattr(shared, "sd_model", None)
    candidates = [getattr(model, "cond_stage_model", None), *_forge_engines(model)]
    return next((each for each in candidates if hasattr(each, "process_texts")), None)


def embedding_names() -> set[str]:
    """Names of the textual-inversion embeddings a prompt can use (a prompt keeps each as one word)."""
    database = getattr(model_hijack, "embedding_db", None)
    if database is not None:  # A1111
        return set(database.word_embeddings)
    # Forge: the loaded model's engines know its embeddings, but Forge loads a newly chosen checkpoint (or the
    # first one) only when the job renders, so the folder's names count too. A name too many only stays one word.
    engines = _forge_engines(getattr(shared, "sd_model", None))
    databases = [getattr(engine, "embeddings", None) for engine in engines]
    loaded = {name for database in databases for name in getattr(database, "word_embeddings", {})}
    return loaded | _embeddings_folder_names()


def _embeddings_folder_names() -> set[str]:
    """The embeddings folder's names, read as Forge's own API reads them."""
    from modules.textual_inversion.textual_inversion import EmbeddingDatabase

    database = EmbeddingDatabase()
    database.add_embedding_dir(shared.cmd_opts.embeddings_dir)
    database.load_textual_inversion_embeddings(force_reload=True, sync_with_sd_model=False)
    return set(database.word_embeddings)
