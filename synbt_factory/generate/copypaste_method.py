"""The copy-paste baseline for the factory: the placed bank tumor pasted with its own voxels.

The placement record of each case names the template, its augmentation, scale and offset; the same
template's image crop is moved by the same transform and pasted (:mod:`synbt_factory.synthesis.copypaste`).
Nothing is drawn here: a case is a function of its placement, itself drawn from the case's own stream
(``case_generator(seed, index, "placement")``). No model, CPU only; picklable (the bank opens lazily per process).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from synbt_factory.config import config_to_dict
from synbt_factory.generate.methods import Synthesized
from synbt_factory.generate.placing import PlacedCase
from synbt_factory.synthesis.copypaste import CopyPasteConfig

__all__ = ["CopyPasteMethod"]


class CopyPasteMethod:
    """Real tumors from the bank, pasted into other backgrounds and blended at the border.

    Args:
        bank: the tumor bank the placements were drawn from (``synbt bank build``).
        config: blend width and intensity matching.
    """

    name = "copypaste"
    batched = False

    def __init__(self, bank: str, config: CopyPasteConfig | None = None) -> None:
        self.bank_location = str(bank)
        self.config = config or CopyPasteConfig()
        self._bank: Any = None

    @classmethod
    def from_bank(cls, bank: str, config: CopyPasteConfig | None = None) -> CopyPasteMethod:
        """Open ``bank`` now and check that it keeps image crops, so a bank without them fails before any case.

        Raises:
            StoreError: ``bank`` is not a tumor bank, or its first template has no usable image crop.
        """
        from synbt_factory.synthesis.bank import TemplateRecord

        method = cls(bank, config)
        opened = method.bank()
        opened.render_image(TemplateRecord(template_id=opened.template_ids[0]))
        return method

    def bank(self) -> Any:
        if self._bank is None:
            from synbt_factory.synthesis.bank import TumorBank

            self._bank = TumorBank.open(self.bank_location)
        return self._bank

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_bank": None}

    def card(self) -> dict[str, Any]:
        return {"method": self.name, **config_to_dict(self.config)}

    def synthesize(self, cases: Sequence[PlacedCase]) -> list[Synthesized]:
        from synbt_factory.synthesis.bank import TemplateRecord
        from synbt_factory.synthesis.copypaste import paste_tumor

        bank = self.bank()
        out: list[Synthesized] = []
        for case in cases:
            t0 = time.perf_counter()
            template = TemplateRecord.from_dict(case.placement["template"])
            tumor_image = bank.render_image(template, pad=self.config.blend_voxels)
            image, record = paste_tumor(
                case.image,
                case.synthetic_mask,
                tumor_image,
                bank.render(template),
                case.placement["offset"],
                self.config,
            )
            meta = bank.meta(template.template_id)
            record = {"template_id": template.template_id, "template_source_case": meta.source_case, **record}
            out.append((np.asarray(image, dtype=np.float32), record, {"synthesis": time.perf_counter() - t0}))
        return out
