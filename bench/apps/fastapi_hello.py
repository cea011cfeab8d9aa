"""Baseline B: a bare FastAPI hello-world (no middleware, no database)."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}
