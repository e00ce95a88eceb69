"""Operations: liveness for load balancers and orchestrators."""

from fastapi import APIRouter

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def health() -> dict[str, str]:
    return {"status": "ok"}
