"""The demo shop database: a small European web shop the SQL tool answers questions about.

Deterministic (a seeded generator, no network, no clock), so the main job's demo
questions have answers a test can check, e.g. "how many customers per country?" or
"orders from France in 2025". Building takes a few milliseconds; the file is written
beside the target and renamed over it, so a reader never sees a half-built database and a
rebuild yields a byte-identical file.

::

    from tierflow.tools.demo.shop import build_shop_db
    path = build_shop_db(Path("/tmp/shop.db"))
"""

from __future__ import annotations

import os
import random
import sqlite3
import tempfile
from datetime import date, timedelta
from pathlib import Path

__all__ = ["CUSTOMERS_PER_COUNTRY", "SHOP_VERSION", "build_shop_db", "shop_db_is_current"]

# Bump when the generated content changes: the SQL tool rebuilds a file whose
# `PRAGMA user_version` differs.
SHOP_VERSION = 1
_SEED = 20250101

# Fixed counts (not drawn at random) so "customers per country" is a known answer.
CUSTOMERS_PER_COUNTRY: dict[str, int] = {
    "FR": 24,
    "DE": 22,
    "ES": 16,
    "IT": 16,
    "NL": 12,
    "BE": 10,
    "PL": 10,
    "PT": 6,
    "AT": 4,
}
_ORDERS = 400

_CITIES: dict[str, tuple[str, ...]] = {
    "FR": ("Paris", "Lyon", "Marseille", "Toulouse", "Lille", "Nantes"),
    "DE": ("Berlin", "Hamburg", "Munich", "Cologne", "Frankfurt", "Leipzig"),
    "ES": ("Madrid", "Barcelona", "Valencia", "Seville", "Bilbao"),
    "IT": ("Rome", "Milan", "Naples", "Turin", "Bologna"),
    "NL": ("Amsterdam", "Rotterdam", "Utrecht", "Eindhoven"),
    "BE": ("Brussels", "Antwerp", "Ghent", "Liège"),
    "PL": ("Warsaw", "Kraków", "Wrocław", "Gdańsk"),
    "PT": ("Lisbon", "Porto", "Braga"),
    "AT": ("Vienna", "Graz", "Salzburg"),
}
_FIRST = (
    "Camille", "Lukas", "Lucía", "Giulia", "Daan", "Emma", "Zofia", "Inês", "Felix",
    "Léa", "Hugo", "Mia", "Mateo", "Sofia", "Noah", "Julia", "Marco", "Anna", "Louis",
    "Elena", "Jan", "Clara", "Tomás", "Alba", "Paul", "Nina", "Piotr", "Marta",
)  # fmt: skip
_LAST = (
    "Martin", "Müller", "García", "Rossi", "de Jong", "Peeters", "Nowak", "Silva",
    "Bernard", "Schmidt", "López", "Russo", "Bakker", "Janssens", "Kowalski", "Santos",
    "Dubois", "Weber", "Romero", "Ferrari", "Visser", "Maes", "Wiśniewski", "Costa",
)  # fmt: skip
_PRODUCTS: tuple[tuple[str, str, float], ...] = (
    ("Espresso beans 1 kg", "Coffee", 24.90),
    ("Filter coffee 500 g", "Coffee", 12.50),
    ("Decaf beans 500 g", "Coffee", 13.90),
    ("Single-origin Ethiopia 250 g", "Coffee", 11.40),
    ("Cold brew concentrate 1 l", "Coffee", 9.80),
    ("Green tea sencha 100 g", "Tea", 8.90),
    ("Earl Grey 200 g", "Tea", 7.50),
    ("Rooibos 150 g", "Tea", 6.20),
    ("Chai spice blend 200 g", "Tea", 9.40),
    ("Matcha ceremonial 30 g", "Tea", 19.90),
    ("Pour-over dripper", "Equipment", 29.00),
    ("Burr grinder", "Equipment", 149.00),
    ("French press 1 l", "Equipment", 34.50),
    ("Gooseneck kettle", "Equipment", 64.90),
    ("Espresso machine", "Equipment", 489.00),
    ("Milk frother", "Equipment", 39.90),
    ("Ceramic mug", "Accessories", 14.00),
    ("Travel tumbler", "Accessories", 22.50),
    ("Paper filters x100", "Accessories", 4.90),
    ("Tea infuser", "Accessories", 8.50),
    ("Coffee scale", "Accessories", 27.90),
    ("Brewing guide (book)", "Books", 18.00),
    ("World atlas of tea (book)", "Books", 32.00),
    ("Barista basics (book)", "Books", 21.50),
)
# Weights for order status; 2026 orders in the last months are more often still open.
_STATUSES = ("delivered", "shipped", "processing", "cancelled", "returned")
_STATUS_WEIGHTS = (70, 10, 6, 9, 5)
# 2025 order lines were sold 5% below today's catalogue price (a price rise on 2026-01-01).
_PRICE_RISE = 1.05

_DDL = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL UNIQUE,
    country TEXT NOT NULL,
    city TEXT NOT NULL,
    signup_date DATE NOT NULL
);
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    category TEXT NOT NULL,
    unit_price_eur REAL NOT NULL
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    order_date DATE NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE order_items (
    order_id INTEGER NOT NULL REFERENCES orders(id),
    product_id INTEGER NOT NULL REFERENCES products(id),
    quantity INTEGER NOT NULL,
    unit_price_eur REAL NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE INDEX orders_customer ON orders(customer_id);
CREATE INDEX orders_date ON orders(order_date);
"""

Row = tuple[object, ...]


def _ascii(text: str) -> str:
    table = str.maketrans("áéíóúàèìòùäöüëïçñłśńżźćąęãõ", "aeiouaeiouaoueicnlsnzzcaeao")
    return text.lower().translate(table).replace(" ", "")


def _rows() -> tuple[list[Row], list[Row], list[Row], list[Row]]:
    rng = random.Random(_SEED)
    customers: list[Row] = []
    for country, count in CUSTOMERS_PER_COUNTRY.items():
        for _ in range(count):
            cid = len(customers) + 1
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            email = f"{_ascii(first)}.{_ascii(last)}{cid}@example.{country.lower()}"
            signup = date(2024, 1, 1) + timedelta(days=rng.randrange(730))
            city = rng.choice(_CITIES[country])
            customers.append((cid, f"{first} {last}", email, country, city, signup.isoformat()))

    products: list[Row] = [(i, *p) for i, p in enumerate(_PRODUCTS, start=1)]

    orders: list[Row] = []
    items: list[Row] = []
    start, span = date(2025, 1, 1), (date(2026, 12, 31) - date(2025, 1, 1)).days + 1
    dates = sorted(start + timedelta(days=rng.randrange(span)) for _ in range(_ORDERS))
    for oid, day in enumerate(dates, start=1):
        customer = customers[rng.randrange(len(customers))]
        signup = date.fromisoformat(str(customer[5]))
        day = max(day, signup)  # nobody orders before signing up
        status = rng.choices(_STATUSES, weights=_STATUS_WEIGHTS)[0]
        orders.append((oid, customer[0], day.isoformat(), status))
        for pid in sorted(rng.sample(range(1, len(products) + 1), rng.randint(1, 4))):
            price = _PRODUCTS[pid - 1][2]
            if day.year == 2025:
                price = round(price / _PRICE_RISE, 2)
            items.append((oid, pid, rng.randint(1, 5), price))
    return customers, products, orders, items


def build_shop_db(path: Path) -> Path:
    """Write the demo shop database to ``path`` (atomically) and return ``path``.

    Idempotent: building again yields a byte-identical file. Takes well under a second.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    customers, products, orders, items = _rows()
    fd, tmp_name = tempfile.mkstemp(prefix=".shop-", suffix=".db", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(_DDL)
            conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)", customers)
            conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?)", products)
            conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", orders)
            conn.executemany("INSERT INTO order_items VALUES (?, ?, ?, ?)", items)
            conn.execute(f"PRAGMA user_version = {SHOP_VERSION}")
            conn.commit()
        finally:
            conn.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def shop_db_is_current(path: Path) -> bool:
    """Whether ``path`` holds this version of the demo database (so it need not be rebuilt)."""
    if not path.is_file():
        return False
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return False
    return bool(version == SHOP_VERSION)
