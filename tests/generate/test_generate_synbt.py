"""synbt generate with the diffusion method: batch size and workers do not change a case (CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synbt_factory.generate import GenerateConfig, run_generate
from synbt_factory.generate.synbt_method import SynBTMethod
from synbt_factory.store import CaseStore
from synbt_factory.store.verify import verify_store


def test_synbt_cases_identical_across_batch_size_and_workers(
    factory_inputs: dict[str, str], tiny_checkpoints: tuple[Path, Path], tmp_path: Path
) -> None:
    vq, diff = tiny_checkpoints
    method = SynBTMethod.from_checkpoints(vq, diff, device="cpu", steps=3, guidance=1.5)
    outs = []
    for batch_size, workers in ((1, 1), (3, 2)):
        out = tmp_path / f"b{batch_size}w{workers}.zarr"
        config = GenerateConfig(n=3, seed=8, method="synbt", batch_size=batch_size, workers=workers)
        run_generate(config, out=out, prepared=factory_inputs["prepared"], bank=factory_inputs["bank"], method=method)
        outs.append(CaseStore.open(out))
    a, b = outs
    assert a.case_ids() == b.case_ids() == ["SYN_000000", "SYN_000001", "SYN_000002"]
    for case_id in a.case_ids():
        assert np.array_equal(a.read_array(case_id, "image"), b.read_array(case_id, "image"))
        attrs = a.case_attrs(case_id)
        assert attrs["method"] == "synbt" and attrs["synthesis"]["ddim_steps"] == 3
        assert attrs["synthesis"]["guidance"] == 1.5
        # voxels beyond the sampler's margin are the background's own voxels
        source = CaseStore.open(factory_inputs["prepared"]).read_array(attrs["source_case"], "image")
        synthetic = a.read_array(case_id, "synthetic_mask") > 0
        from scipy import ndimage

        near = ndimage.binary_dilation(
            synthetic, structure=np.ones((3, 3, 3)), iterations=attrs["synthesis"]["margin_voxels"]
        )
        assert np.array_equal(a.read_array(case_id, "image")[:, ~near], source[:, ~near])
    card = a.attrs
    assert len(card["run_identity"]["method_card"]["vqvae_sha256"]) == 64
    assert card["run_identity"]["method_card"]["guidance"] == 1.5
    # without guidance and with the first blend, the card is the one stores were begun with before the options
    # existed: they still resume with those settings; the default blend changed, so it names itself
    first = SynBTMethod(vq, diff, steps=3, blend=(None, 4)).card()
    assert set(first) == {"method", "vqvae_sha256", "diffusion_sha256", "ddim_steps", "eta", "mode"}
    assert SynBTMethod(vq, diff, steps=3).card()["blend"] == [0, 3]
    assert verify_store(a.location).ok
