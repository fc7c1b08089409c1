"""Pinning on running WebUIs over their HTTP API: one worker (api), the fan-out renderer (pool), the runs (run)."""
