"""Ledger configuration: every period, price and threshold, with the chain's defaults."""

from __future__ import annotations

import dataclasses

from tfgrid_operator.domain import minting, pricing


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerConfig:
    billing_period_s: int = 3600  # §2.5: BillingFrequency 600 blocks = 1 hour
    minting_epoch: int = minting.EPOCH  # §3.1
    minting_period_s: int = minting.PERIOD_SECONDS  # §3.1
    grace_period_s: int = 14 * 24 * 3600  # §2.4: 14 days = 201,600 blocks
    # §2.7 version B: a contract's reserve is paid out every this many billing cycles (and on deletion);
    # 1 pays every bill out at once (a policy choice, not the chain's rule)
    distribution_frequency: int = 24
    mint_settle_s: int = 27 * 3600  # §3.1: minting reads ~27 h past the end to credit uptime up to it
    node_down_after_s: int = 80 * 60  # §1.3: the indexer calls a node up if it reported within 80 min
    tft_price: pricing.TftPrice = pricing.TftPrice()
    pricing_policy: pricing.PricingPolicy = pricing.PricingPolicy()
    connection_price_musd: int = minting.CONNECTION_PRICE_MUSD  # §1.6
    foundation_account: str = "foundation"
    staking_pool_account: str = "staking-pool"
