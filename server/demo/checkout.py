"""The checkout demo: a shop page that watches a simulated payment job (``TANDEM_DEMO``).

``POST /demo/checkout/pay`` creates a job (owner ``shopper``, kind ``checkout``) and starts a
simulated payment and fulfilment worker inside this process: reserve stock, charge the card,
fulfil the order, email the receipt. Each stage reports through the job service, exactly as an
external worker would through ``POST /api/jobs/{id}/progress``; the page (``/demo/checkout``)
watches ``job:<id>`` with ``static/tandem.js`` and shows the outcome. Mounted only when
``Settings.demo_enabled`` (on by default in development, off in production).

The departures board (``/demo/board``) shows what ``tandem demo`` feeds in (server/demo/airport.py):
it lists the hub's flights with ``GET /api/flights``, learns of new ones on ``airport:<hub>``,
follows each ``flight:<id>``, and shows a demo user's inbox from ``user:<id>``, with a token
from ``POST /demo/board/session``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, ConfigDict

from domain.errors import DomainError, InvalidPayload, RateLimited
from domain.jobs import JobError, JobService
from server.api.callers import RuntimeDep
from server.api.jobs import watch_token
from server.auth.tokens import mint_token
from server.config import Settings
from server.demo.airport import HUB, HUB_TIME_ZONE, USERS

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
OWNER = "shopper"
KIND = "checkout"
WATCH_TTL_S = 900
MAX_RUNNING = 100

_ITEMS = (  # sku, name, quantity, unit price in cents
    ("TND-MUG", "Tandem enamel mug", 2, 1450),
    ("TND-TEE", "Organic cotton T-shirt", 1, 2900),
    ("TND-STK", "Sticker pack", 3, 350),
)
_SUBTOTAL_CENTS = sum(quantity * unit for _, _, quantity, unit in _ITEMS)
_SHIPPING_CENTS = 490
CART: dict[str, Any] = {
    "currency": "EUR",
    "items": [
        {"sku": sku, "name": name, "quantity": quantity, "unit_cents": unit}
        for sku, name, quantity, unit in _ITEMS
    ],
    "subtotal_cents": _SUBTOTAL_CENTS,
    "shipping_cents": _SHIPPING_CENTS,
    "total_cents": _SUBTOTAL_CENTS + _SHIPPING_CENTS,
}
CARD = "Visa •••• 4242"
EMAIL = "shopper@example.com"


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    message: str
    start: int
    end: int


STAGES = (
    Stage("reserving_stock", "Reserving your items", 5, 20),
    Stage("charging_card", f"Charging {CARD}", 30, 50),
    Stage("fulfilling_order", "Packing your order", 60, 75),
    Stage("emailing_receipt", f"Emailing the receipt to {EMAIL}", 85, 95),
)
DECLINED = JobError("card_declined", "Your card was declined by the bank. No money was taken.")
INTERRUPTED = JobError("interrupted", "The shop restarted before your order finished.")


class CheckoutSimulator:
    """Runs demo workers as tracked tasks; leaving the context cancels whatever still runs."""

    def __init__(
        self,
        jobs: JobService,
        *,
        step_s: float,
        failure_rate: float,
        rng: random.Random | None = None,
        max_running: int = MAX_RUNNING,
    ) -> None:
        self._jobs = jobs
        self._step_s = step_s
        self._failure_rate = failure_rate
        self._rng = rng or random.Random()
        self._max_running = max_running
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, jobs: JobService, settings: Settings) -> CheckoutSimulator:
        return cls(jobs, step_s=settings.demo_step_s, failure_rate=settings.demo_failure_rate)

    def check_capacity(self) -> None:
        if len(self._tasks) >= self._max_running:
            raise RateLimited("too many demo checkouts running; try again in a few seconds")

    def start(self, job_id: str) -> None:
        self.check_capacity()
        task = asyncio.get_running_loop().create_task(self._run(job_id), name=f"checkout-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def __aenter__(self) -> CheckoutSimulator:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Cancel the running workers; each marks its job failed (``interrupted``) on the way."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    async def _run(self, job_id: str) -> None:
        try:
            for stage in STAGES:
                await self._jobs.progress(
                    job_id, stage.start, stage=stage.name, message=stage.message
                )
                await asyncio.sleep(self._step_s / 2)
                if stage.name == "charging_card" and self._rng.random() < self._failure_rate:
                    await self._jobs.fail(job_id, DECLINED)
                    return
                await self._jobs.progress(job_id, stage.end)
                await asyncio.sleep(self._step_s / 2)
            await self._jobs.complete(job_id, self._result(job_id))
        except asyncio.CancelledError:
            await self._give_up(job_id, INTERRUPTED)
            raise
        except DomainError as exc:  # e.g. cancelled through the API meanwhile: stop quietly
            log.info("demo checkout %s stopped: %s", job_id, exc.message)
        except Exception:
            log.exception("demo checkout %s failed", job_id)
            await self._give_up(job_id, JobError("internal", "Something went wrong on our side."))

    async def _give_up(self, job_id: str, error: JobError) -> None:
        """Best effort, so that a watching page never waits forever for a finished worker."""
        try:
            await asyncio.wait_for(self._jobs.fail(job_id, error), 2.0)
        except Exception:
            log.debug("could not mark demo checkout %s failed", job_id, exc_info=True)

    def _result(self, job_id: str) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "order": {"number": f"TND-{job_id[:8].upper()}", **CART},
            "receipt": {
                "number": f"R-{now:%Y%m%d}-{self._rng.randrange(10**6):06d}",
                "amount_cents": CART["total_cents"],
                "currency": CART["currency"],
                "card": CARD,
                "authorization": f"{self._rng.randrange(16**6):06X}",
                "emailed_to": EMAIL,
                "issued_at": now.isoformat(timespec="seconds"),
            },
        }


class Payment(BaseModel):
    job: dict[str, Any]
    watch_token: str
    watch_token_expires_at: int


router = APIRouter(prefix="/demo", tags=["demo"])


@router.get("/checkout", include_in_schema=False)
async def checkout_page(runtime: RuntimeDep) -> HTMLResponse:
    return HTMLResponse(_checkout_html(runtime.settings.serializer))


@router.get("/checkout/success", include_in_schema=False)
async def success_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "checkout-success.html", media_type="text/html")


@router.post("/checkout/pay", response_model=Payment)
async def pay(request: Request, runtime: RuntimeDep) -> Payment:
    """Start a simulated payment; the page watches the job with the returned token."""
    simulator: CheckoutSimulator = request.app.state.checkout
    simulator.check_capacity()
    job = await runtime.jobs.create(owner=OWNER, kind=KIND)
    simulator.start(job.id)
    token, expires_at = watch_token(runtime, job, WATCH_TTL_S)
    return Payment(job=job.snapshot(), watch_token=token, watch_token_expires_at=expires_at)


class BoardLogin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str


class BoardSession(BaseModel):
    user: str
    token: str
    expires_at: int


@router.get("/board", include_in_schema=False)
async def board_page(runtime: RuntimeDep) -> HTMLResponse:
    return HTMLResponse(_board_html(runtime.settings.serializer))


@router.post("/board/session", response_model=BoardSession)
async def board_session(body: BoardLogin, runtime: RuntimeDep) -> BoardSession:
    """A short-lived token for one of the demo users: enough for their own ``user:`` channel
    and for flights (any signed-in user may follow a flight), nothing else."""
    if body.user not in USERS:
        raise InvalidPayload(f"user must be one of the demo users: {', '.join(USERS)}")
    token, expires_at = mint_token(
        runtime.settings, sub=body.user, ttl_s=WATCH_TTL_S, channels=[], name=body.user.title()
    )
    return BoardSession(user=body.user, token=token, expires_at=expires_at)


CONFIG_PLACEHOLDER = '<script id="demo-config" type="application/json">{}</script>'
BOARD_CONFIG = {
    "hub": HUB,
    "timeZone": HUB_TIME_ZONE,
    "users": list(USERS),
    # The list again now and then, a safety net: new flights arrive on airport:<hub>.
    "refreshMs": 60_000,
    # A departed, landed, cancelled or diverted flight leaves the board this long after.
    "leaveAfterMs": 180_000,
}


@cache
def _checkout_html(serializer: str) -> str:
    """The page with its config inlined, and the socket.io build matching the serializer."""
    config = {"cart": CART, "pollMs": 3000, "redirectMs": 1500}
    return _page("checkout.html", config, serializer)


@cache
def _board_html(serializer: str) -> str:
    return _page("board.html", BOARD_CONFIG, serializer)


def _page(name: str, settings: dict[str, Any], serializer: str) -> str:
    html = (STATIC_DIR / name).read_text(encoding="utf-8")
    if CONFIG_PLACEHOLDER not in html:
        raise RuntimeError(f"{name} lost its demo-config placeholder")
    config = json.dumps(settings, ensure_ascii=False)
    inline = CONFIG_PLACEHOLDER.replace("{}", config.replace("</", "<\\/"))
    html = html.replace(CONFIG_PLACEHOLDER, inline)
    if serializer == "msgpack":
        html = html.replace("/vendor/socket.io.min.js", "/vendor/socket.io.msgpack.min.js")
    return html
