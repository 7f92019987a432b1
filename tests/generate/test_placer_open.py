"""A placer opened by several worker threads at once hands every thread the loaded bank."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from synbt_factory.generate.placing import Placer


class _Bank:
    loaded = False

    def load_all(self) -> None:
        self.loaded = True


def test_a_second_thread_waits_for_the_bank_instead_of_getting_none(monkeypatch: pytest.MonkeyPatch) -> None:
    placer = Placer("prepared.zarr", "bank.zarr")
    seen: dict[str, Any] = {}

    def second_thread() -> None:
        seen["store"], seen["bank"] = placer._open()

    def open_bank(location: str, **_: Any) -> _Bank:
        # the first thread is inside _open: a second worker thread asks for the stores now
        other = threading.Thread(target=second_thread)
        other.start()
        other.join(timeout=0.5)  # it must still be waiting (it returns once this opening is finished)
        seen["second_finished_early"] = not other.is_alive()
        seen["thread"] = other
        return _Bank()

    monkeypatch.setattr("synbt_factory.synthesis.bank.TumorBank.open", staticmethod(open_bank))
    monkeypatch.setattr("synbt_factory.store.CaseStore.open", staticmethod(lambda location, **_: f"store:{location}"))
    store, bank = placer._open()
    seen["thread"].join(timeout=10)
    assert store == "store:prepared.zarr" and bank.loaded
    assert not seen["second_finished_early"]
    assert seen["store"] == store and seen["bank"] is bank
