"""The shop every tenant runs: pages, products with fixed prices, and how often pages are viewed."""

from __future__ import annotations

import numpy as np

CATEGORIES = ("shoes", "shirts", "trousers", "jackets", "bags", "hats", "socks", "watches")
N_PRODUCTS = 200
PAGES: tuple[str, ...] = (
    "/",
    "/search",
    "/cart",
    "/checkout",
    "/checkout/complete",
    *(f"/category/{c}" for c in CATEGORIES),
    *(f"/products/{k}" for k in range(1, N_PRODUCTS + 1)),
)
CART_PAGE, CHECKOUT_PAGE, COMPLETE_PAGE = (
    PAGES.index("/cart"),
    PAGES.index("/checkout"),
    PAGES.index("/checkout/complete"),
)
FIRST_PRODUCT_PAGE = PAGES.index("/products/1")

# The catalogue is the same for every seed; prices in cents, lognormal around 30.
PRICES_CENTS: np.ndarray = np.concatenate(
    [[0], np.round(np.random.default_rng(0).lognormal(np.log(3000), 0.6, N_PRODUCTS)).astype(np.int64)]
)

# Browsing pages (not cart or checkout) viewed with Zipf-like popularity: home first, long product tail.
BROWSE_PAGES = np.array([i for i in range(len(PAGES)) if i not in (CART_PAGE, CHECKOUT_PAGE, COMPLETE_PAGE)])
_browse_weights = 1.0 / np.arange(1, len(BROWSE_PAGES) + 1) ** 0.9
_BROWSE_CDF = np.cumsum(_browse_weights) / _browse_weights.sum()
_product_weights = 1.0 / np.arange(1, N_PRODUCTS + 1)
_PRODUCT_CDF = np.cumsum(_product_weights) / _product_weights.sum()

# Order revenue: lognormal with a long tail (median ~45.00, a few orders in the thousands).
REVENUE_MEDIAN_CENTS = 4500
REVENUE_SIGMA = 1.0


def browse_pages(rng: np.random.Generator, n: int) -> np.ndarray:
    return BROWSE_PAGES[np.minimum(np.searchsorted(_BROWSE_CDF, rng.random(n), side="right"), len(BROWSE_PAGES) - 1)]


def products(rng: np.random.Generator, n: int) -> np.ndarray:
    """Product numbers 1..N_PRODUCTS of added-to-cart items, popular ones more often."""
    return np.minimum(np.searchsorted(_PRODUCT_CDF, rng.random(n), side="right"), N_PRODUCTS - 1) + 1


def order_revenue(rng: np.random.Generator, n: int) -> np.ndarray:
    cents = np.round(rng.lognormal(np.log(REVENUE_MEDIAN_CENTS), REVENUE_SIGMA, n))
    return np.maximum(cents, 100).astype(np.int64)
