"""Azure Key Vault list prices for each usage meter (ops/usage.py), as dated data.

What `okv usage` shows next to the counts: what the same usage would cost at Azure's
list price, so that an operator can compare. They are not this deployment's prices.
Each price says when and where it was read and how sure it is: most come from third-party
reads of the Azure Retail Prices API (USD, pay-as-you-go, one region), not from the
official pricing page; prices change and differ by region, so treat every figure as an
estimate and check the Retail Prices API for your region before relying on one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    meter: str  # ops/usage.py's meter name
    azure_meter: str  # Azure's meter as the Retail Prices API names it
    usd: float  # price of `per` units
    per: int  # units the price is for (10,000 operations, 1 key-month, 1 hour)
    unit: str  # what one unit is
    as_of: str  # when the price was read
    source: str  # where it was read
    verified: bool  # True: several independent reads agree; False: one read or conflicting

    def cost(self, count: int) -> float:
        """The list price of `count` units, in USD."""
        return count * self.usd / self.per


PRICES: dict[str, Price] = {p.meter: p for p in (
    Price("operations", "Operations (Standard and Premium)", 0.03, 10_000, "transaction",
          "2026", "Azure Retail Prices API, eastus, several third-party reads; a Microsoft "
          "Q&A answer agrees", True),
    Price("advanced_key_operations", "Advanced Key Operations (RSA 3072/4096, EC)", 0.15,
          10_000, "transaction", "2026-09-24", "Azure Retail Prices API, westeurope, one "
          "read; another note lists $0.03 for Standard in eastus", False),
    Price("hsm_key_months", "Premium HSM-protected RSA 2048-bit key", 1.00, 1,
          "key version-month", "2026-09-24", "Azure Retail Prices API, one read", False),
    Price("hsm_advanced_key_months", "Premium HSM-protected Advanced Key (RSA 3072/4096, EC)",
          5.00, 1, "key version-month", "2026-09-24", "Azure Retail Prices API, one read: "
          "the price of the first 250 keys; the lower prices of the tiers above 250 are "
          "not applied (unverified)", False),
    Price("certificate_renewal", "Certificate Renewal Request", 3.00, 1, "renewal",
          "2026", "third-party read, eastus", False),
    Price("key_rotation", "Automated Key Rotation", 1.00, 1, "scheduled rotation", "2026",
          "third-party read; the Key Vault rotation documentation confirms a charge per "
          "scheduled rotation, not the amount", False),
    Price("managed_hsm_pool_hours", "Key Vault HSM Pool, Standard B1 Instance", 3.20, 1,
          "pool-hour", "2026", "Azure Retail Prices API, eastus and southcentralus, several "
          "third-party reads", True),
)}


def price_of(meter: str) -> Price | None:
    return PRICES.get(meter)
