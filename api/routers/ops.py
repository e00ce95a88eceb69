"""Liveness for load balancers: ``/healthz`` stays on the public app, answers ``ok`` and nothing
else, and needs no secret (probes have none). The operator's credential is ``api.operators``."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def health() -> dict[str, str]:
    return {"status": "ok"}
