"""Knobs of one generator run and the probabilities derived from them."""

from __future__ import annotations

from dataclasses import dataclass, field

# Funnel of a human session: landing page views, then each step with this chance given the previous.
PAGE_VIEW_GEOMETRIC_P = 0.25  # page views per session ~ Geometric(0.25): mean 4
CART_RATE = 0.30
CHECKOUT_RATE = 0.50
PURCHASE_RATE = 0.60
MEAN_EVENTS_PER_SESSION = 1 / PAGE_VIEW_GEOMETRIC_P + CART_RATE * (1 + CHECKOUT_RATE * (1 + PURCHASE_RATE))

EXPERIMENT_KEY = "checkout_button"
VARIANTS = ("control", "treatment")
CURRENCIES = ("USD", "EUR", "GBP")

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
SECOND_US = 1_000_000


@dataclass(frozen=True)
class GeneratorConfig:
    """One run; backfill when `rate` is None, live otherwise. Shares are fractions of sent records."""

    seed: int = 1
    tenants: int = 3
    users: int | None = None
    bots: int = 3
    bot_share: float = 0.03
    invalid_share: float = 0.01
    late_share: float = 0.02
    duplicate_share: float = 0.01
    experiment_lift: float = 0.10
    start_us: int = 0  # backfill: first day at 00:00 UTC, in microseconds
    days: int = 1
    events_per_day: int = 100_000
    rate: float | None = None  # live: records a second
    duration: float = 60.0  # live: seconds
    write_keys: dict[str, str] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.rate is not None

    @property
    def records_per_second(self) -> float:
        return self.rate if self.rate is not None else self.events_per_day / 86_400

    @property
    def tenant_ids(self) -> list[str]:
        return [f"tenant_{i + 1}" for i in range(self.tenants)]

    @property
    def user_count(self) -> int:
        """Human users; by default one per five records a day, so most users are rarely active."""
        if self.users is not None:
            return self.users
        return int(min(max(self.records_per_second * 86_400 // 5, 100 * self.tenants), 1_000_000))

    @property
    def human_share(self) -> float:
        return 1.0 - self.invalid_share - self.duplicate_share - self.bot_share

    # Rates per human event or session chosen so that each share holds of all sent records.
    @property
    def late_session_prob(self) -> float:
        return self.late_share / self.human_share

    @property
    def invalid_per_human_event(self) -> float:
        return self.invalid_share / self.human_share

    @property
    def duplicate_per_event(self) -> float:
        return self.duplicate_share / (1.0 - self.invalid_share - self.duplicate_share)

    def write_key(self, tenant_id: str) -> str:
        return self.write_keys.get(tenant_id, tenant_id)

    def check(self) -> None:
        """Raise ValueError saying which option is out of range."""
        for name in ("bot_share", "invalid_share", "late_share", "duplicate_share"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1)")
        if self.human_share <= 0.2 or self.late_share > self.human_share:
            raise ValueError("bot, invalid and duplicate shares leave too few human events; lower them")
        if self.tenants < 1 or self.days < 1 or self.events_per_day < 1:
            raise ValueError("--tenants, --days and --events-per-day must be at least 1")
        if self.bots < 0 or (self.bot_share > 0 and self.bots == 0):
            raise ValueError("--bots must be >= 1 when --bot-share is above 0")
        if self.rate is not None and (self.rate <= 0 or self.duration <= 0):
            raise ValueError("--rate and --duration must be positive")
        if not -0.9 < self.experiment_lift < 1 / PURCHASE_RATE - 1:
            raise ValueError(f"--experiment-lift must keep the purchase rate below 1 (< {1 / PURCHASE_RATE - 1:.2f})")
        unknown = set(self.write_keys) - set(self.tenant_ids)
        if unknown:
            raise ValueError(f"--write-key names unknown tenants {sorted(unknown)}; tenants are {self.tenant_ids}")
