"""Bastion's HTTP service: agent apps as an API, live events, an OpenAI-compatible endpoint.

`create_app(system, settings=...)` builds the FastAPI app; ``bastion serve`` runs it on uvicorn.
Needs the ``server`` extra (``pip install 'bastion-agents[server]'``).
"""

from bastion.server.app import create_app

__all__ = ["create_app"]
