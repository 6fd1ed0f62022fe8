"""The HTTP API (FastAPI): `POST /v1/generate` and `GET /v1/health`; see docs/api.md."""
