"""Diffusion training: latent precompute and cache, crops, overfitting one case, exact resume, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from tiny_autoencoder import TinyVQAE
from typer import Typer
from typer.testing import CliRunner

from synbt_factory.checkpoint import load_checkpoint
from synbt_factory.config import replace
from synbt_factory.data.latents import (
    effective_crop,
    flip_variants,
    latent_statistics,
    precompute_latents,
    renormalise,
    sample_crop_batch,
    select_tumor_cases,
)
from synbt_factory.models.diffusion import build_condition, load_diffusion
from synbt_factory.store import CaseStore
from synbt_factory.training.diffusion import diffusion_train_preset, train_diffusion

SHAPE = (48, 48, 32)


def _make_store(path: Path) -> Path:
    """Three train cases with an enhancing blob (tumor) and one train case without tumor, one test case."""
    rng = np.random.default_rng(0)
    store = CaseStore.create(path, kind="prepared", card={})
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    for i in range(5):
        centre = rng.uniform(-0.3, 0.3, 3)
        blob = np.exp(-((grid - centre[:, None, None, None]) ** 2).sum(0) / 0.05)
        if i == 3:
            blob[:] = 0.0
        pre = 0.5 + 0.2 * np.sin(3 * grid[0] + i) * np.cos(2 * grid[1])
        store.write_case(
            f"CASE_{i:03d}",
            {"image": np.stack([pre, pre + 2.0 * blob]).astype(np.float16), "mask": (blob > 0.5).astype(np.uint8)},
            {
                "affine": np.diag([1.0, 1.0, 1.0, 1.0]).tolist(),
                "spacing": [1, 1, 1],
                "split": "test" if i == 4 else "train",
            },
        )
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> CaseStore:
    return CaseStore.open(_make_store(tmp_path_factory.mktemp("diff") / "prepared.zarr"))


@pytest.fixture(scope="module")
def autoencoder(store: CaseStore) -> TinyVQAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ae = TinyVQAE().eval()
    images = torch.stack([torch.from_numpy(store.read_array(c, "image").astype(np.float32)) for c in store.case_ids()])
    ae.init_codebook(images, torch.Generator().manual_seed(0))
    return ae


@pytest.fixture(scope="module")
def latents(store: CaseStore, autoencoder: TinyVQAE, tmp_path_factory: pytest.TempPathFactory):
    model_cfg, _ = diffusion_train_preset("tiny")
    ids = select_tumor_cases(store, splits=("train",))
    cache = tmp_path_factory.mktemp("cache")
    return precompute_latents(
        store, ids, autoencoder, autoencoder.latent_norm(), model_cfg, autoencoder_id="tiny-ae", cache_dir=cache
    ), cache


def test_only_tumor_present_training_cases_are_selected(store: CaseStore) -> None:
    assert select_tumor_cases(store, splits=("train",)) == ["CASE_000", "CASE_001", "CASE_002"]
    with pytest.raises(ValueError, match="tumor-present"):
        select_tumor_cases(store, splits=(), case_ids=["CASE_003"])


def test_latents_have_target_and_condition_and_are_cached(latents, store, autoencoder) -> None:
    cases, cache = latents
    model_cfg, _ = diffusion_train_preset("tiny")
    case = cases[0]
    assert case.z0.shape == (8, 12, 12, 8) and case.cond.shape == (9, 12, 12, 8)
    assert 0 < float(case.cond[-1].sum()) and float(case.cond[-1].max()) <= 1.0  # down(M) as tumor fraction
    tumor_cells = case.cond[-1] > 0
    assert not torch.allclose(case.z0[:, tumor_cells], case.cond[:8][:, tumor_cells])  # tumor removed in Z_masked
    assert sorted(p.name for p in cache.glob("*.npz")) == [f"{c.case_id}.npz" for c in cases]
    again = precompute_latents(
        store,
        [case.case_id],
        autoencoder,
        autoencoder.latent_norm(),
        model_cfg,
        autoencoder_id="tiny-ae",
        cache_dir=cache,
    )
    assert torch.equal(again[0].z0, case.z0) and torch.equal(again[0].cond, case.cond)
    other = replace(model_cfg, fill="zeros")  # another conditioning: the cache key changes, the latents too
    recomputed = precompute_latents(
        store, [case.case_id], autoencoder, autoencoder.latent_norm(), other, autoencoder_id="tiny-ae", cache_dir=cache
    )
    assert torch.equal(recomputed[0].z0, case.z0) and not torch.equal(recomputed[0].cond, case.cond)


def test_flip_variants_are_every_subset_of_the_axes() -> None:
    assert flip_variants(()) == [()]
    assert flip_variants((2, 0)) == [(), (0,), (2,), (0, 2)]
    with pytest.raises(ValueError, match="image axes"):
        flip_variants((3,))
    for bad in ((0, 0), (1, 3)):
        with pytest.raises(ValueError, match="flip_axes"):
            replace(diffusion_train_preset("tiny")[1], flip_axes=bad)


def test_mirrored_cases_are_encoded_from_the_mirrored_volume(latents, store, autoencoder) -> None:
    cases, _ = latents
    model_cfg, _ = diffusion_train_preset("tiny")
    cache = latents[1].parent / "flip-cache"
    case_id = cases[0].case_id
    versions = precompute_latents(
        store,
        [case_id],
        autoencoder,
        autoencoder.latent_norm(),
        model_cfg,
        autoencoder_id="tiny-ae",
        cache_dir=cache,
        flip_axes=(0, 2),
    )
    assert [v.flip for v in versions] == [(), (0,), (2,), (0, 2)] and {v.case_id for v in versions} == {case_id}
    assert torch.equal(versions[0].z0, cases[0].z0) and torch.equal(versions[0].cond, cases[0].cond)
    assert sorted(p.name for p in cache.glob("*.npz")) == sorted(
        f"{case_id}{suffix}.npz" for suffix in ("", ".flip0", ".flip2", ".flip02")
    )
    arrays, _ = store.read_case(case_id, ("image", "mask"))
    for version in versions[1:]:
        axes = list(version.flip)
        # down(M) is computed per latent cell, and the shape is a multiple of the cell: it mirrors exactly
        assert torch.equal(version.cond[-1], torch.flip(cases[0].cond[-1], axes))
        image = torch.from_numpy(np.flip(arrays["image"].astype(np.float32), [1 + a for a in axes]).copy())[None]
        mask = torch.from_numpy(np.flip(arrays["mask"], axes).copy())[None]
        with torch.inference_mode():
            z0, cond = build_condition(autoencoder, autoencoder.latent_norm(), image, mask, model_cfg)
        assert torch.equal(version.z0, z0[0].float()) and torch.equal(version.cond, cond[0].float())
    assert not torch.equal(versions[1].z0, torch.flip(cases[0].z0, [1]))  # not merely the mirrored latent
    again = precompute_latents(
        store,
        [case_id],
        autoencoder,
        autoencoder.latent_norm(),
        model_cfg,
        autoencoder_id="tiny-ae",
        cache_dir=cache,
        flip_axes=(0, 2),
    )
    assert all(torch.equal(a.z0, b.z0) and torch.equal(a.cond, b.cond) for a, b in zip(again, versions, strict=True))


def test_standardised_latents_have_unit_variance_and_keep_down_m(latents, autoencoder) -> None:
    cases, _ = latents
    base = autoencoder.latent_norm()
    mean, std = latent_statistics(cases)
    assert std < 0.5  # codebook-range latents are far from unit variance
    target = base.standardised(mean, std)
    moved = renormalise(cases, base, target)
    values = torch.cat([c.z0.flatten() for c in moved])
    assert abs(float(values.mean())) < 1e-4 and abs(float(values.std(unbiased=False)) - 1.0) < 1e-4
    for old, new in zip(cases, moved, strict=True):
        assert torch.equal(new.cond[-1], old.cond[-1])  # down(M) is not a latent
        assert torch.allclose(target.denormalise(new.cond[:-1]), base.denormalise(old.cond[:-1]), atol=1e-5)
    assert renormalise(cases, base, base)[0] is cases[0]


def test_tumor_crops_contain_the_tumor(latents) -> None:
    cases, _ = latents
    crop = effective_crop(cases, (8, 8, 8), 2)
    z0, cond = sample_crop_batch(cases, np.random.default_rng(0), batch_size=16, crop=crop, tumor_fraction=1.0)
    assert z0.shape == (16, 8, 8, 8, 8) and cond.shape == (16, 9, 8, 8, 8)
    assert all(float(c[-1].sum()) > 0 for c in cond)
    assert effective_crop(cases, (64, 64, 64), 2) == (12, 12, 8)
    with pytest.raises(ValueError, match="latent crop"):
        effective_crop(cases, (1, 8, 8), 2)


def _losses(out: Path) -> dict[int, float]:
    return {int(r["step"]): r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def test_tiny_model_overfits_one_case(latents, autoencoder, tmp_path: Path) -> None:
    cases, _ = latents
    model_cfg, train_cfg = diffusion_train_preset("tiny")
    cfg = replace(
        train_cfg, steps=100, lr=5e-3, batch_size=2, crop=(12, 12, 8), grad_clip=0.0, log_every=1, save_every=1000
    )
    train_diffusion(
        cases[:1],
        tmp_path,
        model_config=model_cfg,
        train_config=cfg,
        latent_norm=autoencoder.latent_norm(),
        vqvae_sha256="tiny-ae",
        seed=0,
    )
    losses = list(_losses(tmp_path).values())
    first, last = float(np.mean(losses[:10])), float(np.mean(losses[-20:]))
    assert last < 0.7 * first, (first, last)  # measured: 0.92 → 0.5 at 80 steps


def test_resume_gives_the_same_next_losses_and_checkpoint_rebuilds(latents, autoencoder, tmp_path: Path) -> None:
    cases, _ = latents
    model_cfg, train_cfg = diffusion_train_preset("tiny")
    cfg = replace(train_cfg, steps=6, save_every=3, log_every=1, crop=(8, 8, 8), mask_loss_weight=2.0)
    kwargs = dict(model_config=model_cfg, latent_norm=autoencoder.latent_norm(), vqvae_sha256="tiny-ae", seed=3)
    train_diffusion(cases, tmp_path / "straight", train_config=cfg, **kwargs)
    train_diffusion(cases, tmp_path / "split", train_config=replace(cfg, steps=3), **kwargs)
    with pytest.raises(FileExistsError):
        train_diffusion(cases, tmp_path / "split", train_config=cfg, **kwargs)
    result = train_diffusion(cases, tmp_path / "split", train_config=cfg, resume=True, **kwargs)
    assert result.resumed_from == 3
    straight, split = _losses(tmp_path / "straight"), _losses(tmp_path / "split")
    assert list(split) == [1, 2, 3, 4, 5, 6]
    assert all(split[s] == straight[s] for s in (4, 5, 6)), (straight, split)

    ckpt = load_checkpoint(tmp_path / "split" / "final.pt", kind="diffusion")
    assert ckpt["vqvae_sha256"] == "tiny-ae" and ckpt["step"] == 6
    assert {"model", "ema", "optimizer", "rng", "noise_generator", "latent_norm", "config"} <= set(ckpt)
    model, config, norm, sha = load_diffusion(tmp_path / "split" / "final.pt")
    assert config == model_cfg and norm == autoencoder.latent_norm() and sha == "tiny-ae"
    straight_model, *_ = load_diffusion(tmp_path / "straight" / "final.pt")
    state = model.state_dict()
    assert all(torch.equal(v, straight_model.state_dict()[k]) for k, v in state.items())
    raw, *_ = load_diffusion(tmp_path / "split" / "final.pt", weights="model")
    assert not all(torch.equal(v, raw.state_dict()[k]) for k, v in state.items())


# ---------------------------------------------------------------------------- CLI (real VQ-VAE checkpoint)
@pytest.fixture(scope="module")
def vqvae_ckpt(store: CaseStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from synbt_factory.training.vqvae import train_presets, train_vqvae

    model_cfg, cfg = train_presets("tiny", "patch")
    out = tmp_path_factory.mktemp("vq_run")
    train_vqvae(store.location, out, train_config=replace(cfg, steps=2, save_every=2), model_config=model_cfg, seed=0)
    return out / "final.pt"


def vqvae_norm(path: Path):
    from synbt_factory.models.vqvae import load_vqvae

    return load_vqvae(path)[1]


def _app() -> Typer:
    from cli.generate import generate_one
    from cli.train import train_diffusion as train_cmd

    app = Typer()
    app.command("train-diffusion")(train_cmd)
    app.command("generate-one")(generate_one)
    return app


def test_cli_trains_then_generates_one_case(store: CaseStore, vqvae_ckpt: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    app = _app()
    run = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "train-diffusion",
            "--vqvae",
            str(vqvae_ckpt),
            "--data",
            str(store.location),
            "--out",
            str(run),
            "--preset",
            "tiny",
            "--steps",
            "3",
            "--latent-scale",
            "std",
            "--flip-axes",
            "0",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (run / "final.pt").is_file() and len(list((run / "latents").glob("*.npz"))) == 6  # 3 cases, 2 versions
    assert json.loads((run / "config.json").read_text())["train"]["flip_axes"] == [0]
    again = runner.invoke(
        app,
        [
            "train-diffusion",
            "--vqvae",
            str(vqvae_ckpt),
            "--data",
            str(store.location),
            "--out",
            str(run),
            "--preset",
            "tiny",
            "--steps",
            "3",
            "--device",
            "cpu",
        ],
    )
    assert again.exit_code == 2 and "--resume" in again.output
    _, _, norm, _ = load_diffusion(run / "final.pt")  # standardised: the cached latents have unit variance under it
    cached = [np.load(p)["z0"] for p in sorted((run / "latents").glob("*.npz"))]
    raw = vqvae_norm(vqvae_ckpt).denormalise(torch.from_numpy(np.concatenate([c.ravel() for c in cached])).double())
    assert abs(float(norm.normalise(raw).std()) - 1.0) < 1e-3
    resumed = runner.invoke(
        app,
        [
            "train-diffusion",
            "--vqvae",
            str(vqvae_ckpt),
            "--data",
            str(store.location),
            "--out",
            str(run),
            "--preset",
            "tiny",
            "--steps",
            "4",
            "--latent-scale",
            "std",
            "--flip-axes",
            "0",
            "--resume",
            "--device",
            "cpu",
        ],
    )
    assert resumed.exit_code == 0, resumed.output
    assert load_diffusion(run / "final.pt")[2] == norm and load_checkpoint(run / "final.pt")["step"] == 4

    arrays, attrs = store.read_case("CASE_003", ("image",))
    mask = np.zeros(SHAPE, np.uint8)
    mask[20:28, 20:27, 12:18] = 1
    affine = np.asarray(attrs["affine"])
    mask_path = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(mask, affine), str(mask_path))
    out = tmp_path / "syn.nii.gz"
    res = runner.invoke(
        app,
        [
            "generate-one",
            "--case",
            f"{store.location}::CASE_003",
            "--mask",
            str(mask_path),
            "--vqvae",
            str(vqvae_ckpt),
            "--diffusion",
            str(run / "final.pt"),
            "--out",
            str(out),
            "--steps",
            "3",
            "--seed",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    result = np.asarray(nib.load(str(out)).dataobj)
    assert result.shape == (*SHAPE, 2)
    original = np.moveaxis(arrays["image"].astype(np.float32), 0, -1)
    assert np.array_equal(result[:5], original[:5])  # far from the mask: the input voxels
    assert not np.array_equal(result[mask > 0], original[mask > 0])

    folder = tmp_path / "CASE_003"  # the same case as a NIfTI folder (synbt store export layout) gives the same result
    for ch in range(2):
        nib.save(nib.Nifti1Image(arrays["image"][ch].astype(np.float32), affine), str(folder.parent / "x.nii.gz"))
        folder.mkdir(exist_ok=True)
        (folder.parent / "x.nii.gz").rename(folder / f"CASE_003_{ch:04d}.nii.gz")
    out2 = tmp_path / "syn2.nii.gz"
    res = runner.invoke(
        app,
        [
            "generate-one",
            "--case",
            str(folder),
            "--mask",
            str(mask_path),
            "--vqvae",
            str(vqvae_ckpt),
            "--diffusion",
            str(run / "final.pt"),
            "--out",
            str(out2),
            "--steps",
            "3",
            "--seed",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(nib.load(str(out2)).dataobj), result)

    res = runner.invoke(
        app,
        [
            "generate-one",
            "--case",
            f"{store.location}::CASE_003",
            "--mask",
            str(mask_path),
            "--vqvae",
            str(vqvae_ckpt),
            "--diffusion",
            str(run / "final.pt"),
            "--out",
            str(out),
            "--guidance",
            "-1",
        ],
    )
    assert res.exit_code == 2 and "guidance" in res.output

    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(mask[:-4], affine), str(bad))
    res = runner.invoke(
        app,
        [
            "generate-one",
            "--case",
            f"{store.location}::CASE_003",
            "--mask",
            str(bad),
            "--vqvae",
            str(vqvae_ckpt),
            "--diffusion",
            str(run / "final.pt"),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 2 and "grid" in res.output


def test_ctrl_c_before_the_first_checkpoint_saves_a_resumable_one(latents, autoencoder, tmp_path: Path) -> None:
    """A run stopped at step 2 of 6 (save_every=3) used to leave no last.pt: every step was lost."""
    import signal

    from synbt_factory.training.runs import TrainingInterrupted

    cases, _ = latents
    model_cfg, train_cfg = diffusion_train_preset("tiny")
    cfg = replace(train_cfg, steps=6, save_every=3, log_every=1, crop=(8, 8, 8))
    kwargs = dict(model_config=model_cfg, latent_norm=autoencoder.latent_norm(), vqvae_sha256="tiny-ae", seed=3)
    train_diffusion(cases, tmp_path / "straight", train_config=cfg, **kwargs)

    def ctrl_c_at_2(done: int, total: int, metrics: object) -> None:
        if done == 2:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted) as stopped:
        train_diffusion(cases, tmp_path / "cut", train_config=cfg, progress=ctrl_c_at_2, **kwargs)
    assert stopped.value.step == 2
    assert load_checkpoint(tmp_path / "cut" / "last.pt", kind="diffusion")["step"] == 2
    result = train_diffusion(cases, tmp_path / "cut", train_config=cfg, resume=True, **kwargs)
    assert result.resumed_from == 2
    straight, cut = _losses(tmp_path / "straight"), _losses(tmp_path / "cut")
    assert list(cut) == [1, 2, 3, 4, 5, 6] and cut == straight


def test_cli_warm_start_begins_at_the_init_weights(store: CaseStore, vqvae_ckpt: Path, tmp_path: Path) -> None:
    """``train diffusion --init`` starts from a trained denoiser's averaged weights and keeps its architecture."""
    runner, app = CliRunner(), _app()
    common = ["--vqvae", str(vqvae_ckpt), "--data", str(store.location), "--preset", "tiny", "--device", "cpu"]
    first = runner.invoke(app, ["train-diffusion", *common, "--out", str(tmp_path / "a"), "--steps", "3"])
    assert first.exit_code == 0, first.output
    warm = runner.invoke(
        app,
        [
            "train-diffusion",
            *common,
            "--out",
            str(tmp_path / "b"),
            "--steps",
            "1",
            "--lr",
            "1e-12",
            "--init",
            str(tmp_path / "a" / "final.pt"),
        ],
    )
    assert warm.exit_code == 0, warm.output
    init_model, init_config, *_ = load_diffusion(tmp_path / "a" / "final.pt")  # the averaged weights
    raw, config, *_ = load_diffusion(tmp_path / "b" / "final.pt", weights="model")
    assert config == init_config
    state = init_model.state_dict()
    weights = [k for k, v in state.items() if v.is_floating_point() and v.ndim > 1]
    assert weights and all(torch.allclose(raw.state_dict()[k], state[k], atol=1e-6) for k in weights)
    bad = runner.invoke(app, ["train-diffusion", *common, "--out", str(tmp_path / "c"), "--init", "pretrained:nope"])
    assert bad.exit_code == 2 and "--init" in bad.output and "Traceback" not in bad.output
    assert not (tmp_path / "c").exists()
