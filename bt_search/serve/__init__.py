"""The warm service: `bt-search serve` keeps the engine and the index loaded; `query` attaches to it.

Modules: `service` (engine, index, caches, reload), `app` (the ASGI routes and guards), `page` (the search
page), `runner` (uvicorn, discovery file, idle timeout, SIGTERM), `discovery` and `client` (stdlib only: the
path `bt-search query` takes through a server imports neither torch nor the server stack).
Only this subpackage imports starlette/uvicorn (the `serve` extra).
"""
