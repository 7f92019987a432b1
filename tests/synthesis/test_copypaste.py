"""Copy-paste tumors: the bank's image crop moves like its mask, the paste keeps the tumor's voxels, blends a
thin margin and leaves the rest of the background bit for bit; ``synbt generate --method copypaste`` end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from cli.main import app
from synbt_factory.generate import GenerateConfig, run_generate
from synbt_factory.generate.copypaste_method import CopyPasteMethod
from synbt_factory.store import CaseStore
from synbt_factory.store.verify import verify_store
from synbt_factory.synthesis.augment import AugmentConfig, AugmentRecord, draw_augment
from synbt_factory.synthesis.bank import TemplateRecord, TumorBank, build_bank
from synbt_factory.synthesis.copypaste import CopyPasteConfig, paste_tumor
from synbt_factory.synthesis.placement import paste

SHAPE = (40, 40, 28)
TISSUE, TUMOR = 0.55, 1.25


def _blob(centre, radii, shape=SHAPE) -> np.ndarray:
    g = np.indices(shape).astype(np.float32)
    return sum(((g[i] - centre[i]) / radii[i]) ** 2 for i in range(3)) <= 1.0


@pytest.fixture(scope="module")
def toy_bank(tmp_path_factory: pytest.TempPathFactory) -> TumorBank:
    """Solid ellipsoids whose post-contrast crop is TUMOR on the mask and TISSUE off it: a picture of the mask."""
    root = tmp_path_factory.mktemp("cp_bank")
    store = CaseStore.create(root / "p.zarr", kind="prepared", card={})
    for i, radii in enumerate(((6, 4, 5), (3, 5, 4), (5, 5, 3))):
        mask = _blob((20, 20, 14), radii).astype(np.uint8)
        image = np.stack([np.full(SHAPE, 0.5), np.where(mask > 0, TUMOR, TISSUE)]).astype(np.float16)
        store.write_case(
            f"C{i}",
            {"image": image, "mask": mask},
            {"affine": np.eye(4).tolist(), "spacing": [1.0, 1.0, 1.0], "split": "train"},
        )
    return build_bank(store, root / "bank.zarr")


def test_render_image_moves_the_crop_exactly_like_the_mask(toy_bank: TumorBank) -> None:
    tid = toy_bank.template_ids[0]
    crop = toy_bank.template_image(tid).astype(np.float32)
    # no transform: the stored crop itself; padding repeats its edge
    assert np.array_equal(toy_bank.render_image(TemplateRecord(template_id=tid)), crop)
    padded = toy_bank.render_image(TemplateRecord(template_id=tid), pad=2)
    assert np.array_equal(padded[:, 2:-2, 2:-2, 2:-2], crop) and np.array_equal(padded[:, 0, 2:-2, 2:-2], crop[:, 0])
    # flips and 90° turns only: the same index operations as on the mask
    turned = TemplateRecord(
        template_id=tid, augment=AugmentRecord(flips=(True, False, True), rot90_k=1, rot90_axes=(0, 2))
    )
    expected = np.rot90(np.flip(crop, axis=(1, 3)), k=1, axes=(1, 3))
    assert np.array_equal(toy_bank.render_image(turned), expected)
    # any augmentation: the crop's tumor-bright voxels are the rendered mask's voxels
    rng = np.random.default_rng(4)
    config = AugmentConfig(max_angle_deg=30, elastic_range=(0.03, 0.1))
    for tid in toy_bank.template_ids:
        for _ in range(6):
            scale = float(rng.uniform(0.8, 1.3))
            record = TemplateRecord(template_id=tid, augment=draw_augment(rng, config), scale=scale)
            mask = toy_bank.render(record) > 0
            image = toy_bank.render_image(record)
            assert image.shape == (2, *mask.shape)
            bright = image[1] >= (TISSUE + TUMOR) / 2
            assert int((bright != mask).sum()) <= 1  # ties at exactly half way may round either side
            assert np.allclose(image[0], 0.5, atol=1e-3)


def _scene(seed: int = 0, blend: int = 3):
    """A random background, a random tumor crop and a blob mask placed at an offset."""
    rng = np.random.default_rng(seed)
    shape = (32, 30, 26)
    background = rng.uniform(0.2, 1.0, size=(2, *shape)).astype(np.float32)
    tumor = np.pad(_blob((5, 6, 4), (4.5, 5.5, 3.5), shape=(11, 13, 9)), 1).astype(np.uint8)
    tumor_image = rng.uniform(1.5, 3.0, size=(2, *(s + 2 * blend for s in tumor.shape))).astype(np.float32)
    offset = (9, 7, 8)
    return background, tumor, tumor_image, offset, paste(tumor, offset, shape)


def _in_volume(background: np.ndarray, tumor_image: np.ndarray, tumor: np.ndarray, offset, pad: int = 3) -> np.ndarray:
    """The source voxels at their place in the volume (zeros elsewhere)."""
    source = np.zeros_like(background)
    box = tuple(slice(o - pad, o + n + pad) for o, n in zip(offset, tumor.shape, strict=True))
    source[(slice(None), *box)] = tumor_image
    return source


def test_pasted_tumor_keeps_its_voxels_and_nothing_changes_beyond_the_margin() -> None:
    background, tumor, tumor_image, offset, placed = _scene()
    blend = 3
    out, record = paste_tumor(background, placed, tumor_image, tumor, offset, CopyPasteConfig(blend_voxels=blend))
    inside = placed > 0
    # the source voxels lying under the mask, in volume coordinates
    source = _in_volume(background, tumor_image, tumor, offset)
    assert np.array_equal(out[:, inside], source[:, inside])
    distance = ndimage.distance_transform_edt(~inside)
    far = distance > blend
    assert far.sum() > 0.8 * far.size
    assert np.array_equal(out[:, far].view(np.uint32), background[:, far].view(np.uint32))  # bit for bit
    margin = ~inside & ~far
    assert record["tumor_voxels"] == int(inside.sum()) and record["blended_voxels"] == int(margin.sum())
    assert record["channel_scale"] == [1.0, 1.0] and record["blend_voxels"] == blend


def test_the_margin_is_a_smooth_blend_of_source_and_background() -> None:
    background, tumor, tumor_image, offset, placed = _scene(seed=1)
    out, _ = paste_tumor(background, placed, tumor_image, tumor, offset, CopyPasteConfig(blend_voxels=3))
    inside = placed > 0
    source = _in_volume(background, tumor_image, tumor, offset)
    distance = ndimage.distance_transform_edt(~inside)
    margin = ~inside & (distance <= 3)
    weight = (out[:, margin] - background[:, margin]) / (source[:, margin] - background[:, margin])
    assert np.all((weight > 0.0) & (weight < 1.0))  # between source (1) and background (0), never either
    assert np.allclose(weight[0], weight[1], atol=1e-4)  # one weight per voxel for both channels
    d = distance[margin]
    near, mid, outer = weight[0][d == 1].mean(), weight[0][(d > 1.5) & (d <= 2)].mean(), weight[0][d == 3].mean()
    assert near > mid > outer > 0.0  # falls off with the distance to the mask


def test_tissue_intensity_matching_scales_each_channel_once_and_records_it() -> None:
    background, tumor, tumor_image, offset, placed = _scene(seed=2)
    background[0] *= 0.5  # the background's tissue level differs from the source's, per channel
    background[1] = 2.0 * tumor_image[1].mean()
    out, record = paste_tumor(
        background, placed, tumor_image, tumor, offset, CopyPasteConfig(blend_voxels=3, intensity="tissue")
    )
    low, high = record["channel_scale"]
    assert low < 0.5 and high == pytest.approx(2.0, rel=0.05)
    inside = placed > 0
    source = _in_volume(background, tumor_image, tumor, offset)
    scale = np.asarray(record["channel_scale"], dtype=np.float32)
    assert np.array_equal(out[:, inside], source[:, inside] * scale[:, None])
    with pytest.raises(ValueError, match="intensity"):
        CopyPasteConfig(intensity="histogram")


def test_a_mask_that_is_not_the_rendered_tumor_is_refused() -> None:
    background, tumor, tumor_image, offset, placed = _scene()
    shifted = np.roll(placed, 1, axis=0)
    with pytest.raises(ValueError, match="synthetic_mask is not tumor_mask"):
        paste_tumor(background, shifted, tumor_image, tumor, offset)


# ----------------------------------------------------------------------------- end to end on a tiny phantom
@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from synbt_factory.data.prepare import PrepareConfig, prepare_dataset
    from synbt_factory.phantom import write_phantom

    root = tmp_path_factory.mktemp("cp_factory")
    write_phantom(root / "phantom", n=6, seed=3, size="tiny", healthy_fraction=0.0)
    prepare_dataset(root / "phantom", root / "prepared.zarr", config=PrepareConfig(fov_mm=(64, 64, 48)), workers=2)
    build_bank(root / "prepared.zarr", root / "bank.zarr", splits=("train", "test"))
    return {"prepared": str(root / "prepared.zarr"), "bank": str(root / "bank.zarr"), "root": str(root)}


def _generate(inputs: dict[str, str], out: Path, *, n: int, seed: int = 5, workers: int = 2):
    config = GenerateConfig(n=n, seed=seed, method="copypaste", workers=workers)
    return run_generate(
        config,
        out=out,
        prepared=inputs["prepared"],
        bank=inputs["bank"],
        method=CopyPasteMethod.from_bank(inputs["bank"]),
    )


def _contents(path: Path) -> dict[str, tuple[bytes, ...]]:
    store = CaseStore.open(path)
    return {
        c: tuple(store.read_array(c, n).tobytes() for n in ("image", "mask", "synthetic_mask"))
        for c in store.case_ids()
    }


def test_generate_copypaste_writes_verified_deterministic_cases_and_resumes(
    inputs: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "cp.zarr"
    result = _generate(inputs, out, n=3)
    assert result.written == ["SYN_000000", "SYN_000001", "SYN_000002"] and not result.failed
    assert verify_store(out).ok
    store = CaseStore.open(out)
    assert store.attrs["run_identity"]["method_card"]["method"] == "copypaste"
    assert store.attrs["quality_gate"]["reason"] == "not applicable (method copypaste)"
    prepared, bank = CaseStore.open(inputs["prepared"]), TumorBank.open(inputs["bank"])
    clip = float(store.attrs["clip_max"])
    for case_id in store.case_ids():
        arrays, attrs = store.read_case(case_id, ("image", "synthetic_mask"))
        assert attrs["method"] == "copypaste"
        # the stored tumor is the bank tumor's own voxels, moved as the placement moved its mask
        template = TemplateRecord.from_dict(attrs["placement"]["template"])
        assert attrs["synthesis"]["template_id"] == template.template_id
        moved = bank.render_image(template)
        inside = arrays["synthetic_mask"] > 0
        box = tuple(slice(o, o + n) for o, n in zip(attrs["placement"]["offset"], moved.shape[1:], strict=True))
        expected = np.clip(moved, 0.0, clip).astype(np.float16)
        assert np.array_equal(arrays["image"][(slice(None), *box)][:, inside[box]], expected[:, inside[box]])
        # and the background beyond the blend margin is the background case, as it was stored
        far = ndimage.distance_transform_edt(~inside) > CopyPasteConfig().blend_voxels
        source = prepared.read_array(attrs["source_case"], "image")
        assert np.array_equal(arrays["image"][:, far], source[:, far])
    # same seed, other worker count: the same bytes; another seed: other cases
    _generate(inputs, tmp_path / "again.zarr", n=3, workers=1)
    assert _contents(tmp_path / "again.zarr") == _contents(out)
    _generate(inputs, tmp_path / "other.zarr", n=3, seed=6)
    assert _contents(tmp_path / "other.zarr") != _contents(out)
    # a rerun asking for more resumes: the finished cases are kept, each case once
    first = _contents(out)
    result = _generate(inputs, out, n=4)
    assert result.skipped == ["SYN_000000", "SYN_000001", "SYN_000002"] and result.written == ["SYN_000003"]
    after = _contents(out)
    assert sorted(after) == ["SYN_000000", "SYN_000001", "SYN_000002", "SYN_000003"]
    assert {k: after[k] for k in first} == first
    assert verify_store(out).ok


def test_cli_generate_copypaste_and_a_bank_without_image_crops(inputs: dict[str, str], tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli.zarr"
    args = [
        "generate",
        "--n",
        "2",
        "--out",
        str(out),
        "--data",
        inputs["prepared"],
        "--bank",
        inputs["bank"],
        "--method",
        "copypaste",
        "--seed",
        "5",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert CaseStore.open(out).case_ids() == ["SYN_000000", "SYN_000001"] and verify_store(out).ok
    # the same cases as the library call makes
    _generate(inputs, tmp_path / "lib.zarr", n=2)
    assert _contents(out) == _contents(tmp_path / "lib.zarr")
    # a bank whose templates lost their image crops: one clear line naming the bank and the fix, nothing written
    broken = tmp_path / "broken_bank.zarr"
    shutil.copytree(inputs["bank"], broken)
    for image in (broken / "cases").glob("*/image"):
        shutil.rmtree(image)
    result = runner.invoke(
        app,
        [
            "generate",
            "--n",
            "2",
            "--out",
            str(tmp_path / "none.zarr"),
            "--data",
            inputs["prepared"],
            "--bank",
            str(broken),
            "--method",
            "copypaste",
        ],
    )
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert str(broken) in message and "synbt bank build" in message and "Traceback" not in result.output
    assert not (tmp_path / "none.zarr").exists()
