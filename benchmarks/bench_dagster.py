"""Dagster: a chain of N assets (each returns a small dict computed from the one before)
materialised in process with ``TraceletIOManager`` and with Dagster's own
``FilesystemIOManager``; N = 50, 100 and 200 (``--quick``: 5), three interleaved repetitions
each, a fresh store / base folder per run. The ratio column adds tracelet's overhead per
asset, which should stay flat as the chain grows.
"""

from __future__ import annotations

from typing import Any

from ._peers import remove
from ._runner import Case, Contender, Skip, installed, scratch, timed


def chain(n: int) -> list[Any]:
    from dagster import AssetIn, asset

    assets: list[Any] = []
    for i in range(n):
        if i == 0:
            @asset(name="a0")
            def first() -> dict[str, int]:
                return {"i": 0, "rows": 32}
            assets.append(first)
        else:
            @asset(name=f"a{i}", ins={"prev": AssetIn(f"a{i - 1}")})
            def step(prev: dict[str, int]) -> dict[str, int]:
                return {"i": prev["i"] + 1, "rows": prev["rows"]}
            assets.append(step)
    return assets


def cases(quick: bool) -> list[Case]:
    if not installed("dagster") or not installed("tracelet_dagster"):
        raise Skip("dagster or tracelet_dagster is not installed")
    made: list[Case] = []
    for n in ((5,) if quick else (50, 100, 200)):
        assets: list[Any] = []

        def setup(n: int = n, assets: list[Any] = assets) -> None:
            assets[:] = chain(n)

        def run(io: str, assets: list[Any] = assets) -> float:
            from dagster import FilesystemIOManager, materialize

            from tracelet_dagster import TraceletIOManager

            root = scratch(f"dagster-{io}")
            manager = (TraceletIOManager(store_uri=str(root / "store")) if io == "tracelet"
                       else FilesystemIOManager(base_dir=str(root / "fs")))
            try:
                def go() -> None:
                    result = materialize(assets, resources={"io_manager": manager}, raise_on_error=True)
                    if not result.success:
                        raise RuntimeError("materialize failed")
                return timed(go)
            finally:
                remove(root)

        made.append(Case(
            key=f"dagster_chain_{n}", title=f"Dagster {n}-asset chain", per_item=n,
            contenders=[Contender("tracelet TraceletIOManager", lambda run=run: run("tracelet"), tracelet=True),
                        Contender("FilesystemIOManager", lambda run=run: run("fs"))],
            target="<= 1.3x FilesystemIOManager, per-asset overhead flat from 50 to 200",
            setup=setup, repeats=1 if quick else 3))
    return made
