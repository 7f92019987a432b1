"""VQ-VAE training stages, resume, crash-safe checkpoints, evaluation and CLI (tiny CPU configs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from synbt_factory.checkpoint import load_checkpoint
from synbt_factory.config import replace
from synbt_factory.data.volumes import PreparedVolumes, sample_patch_batch, sample_volume_batch
from synbt_factory.evaluate.vqvae_eval import VQVAEEvalConfig, evaluate_vqvae
from synbt_factory.models.vqvae import load_vqvae
from synbt_factory.store import CaseStore
from synbt_factory.training.vqvae import VQVAETrainConfig, reconstruction_l1, train_presets, train_vqvae

SHAPE = (40, 48, 32)


def _make_prepared_store(path: Path, *, n: int = 3, phases: int = 3) -> Path:
    """Smooth background, a blob brighter in the post-contrast phases; cases 0..n-2 train, last test."""
    rng = np.random.default_rng(0)
    store = CaseStore.create(path, kind="prepared", card={})
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij"))
    for i in range(n):
        centre = rng.uniform(-0.4, 0.4, 3)
        blob = np.exp(-((grid - centre[:, None, None, None]) ** 2).sum(0) / 0.08)
        pre = 0.5 + 0.3 * np.sin(3 * grid[0] + i) * np.cos(2 * grid[1]) + 0.02 * rng.standard_normal(SHAPE)
        post = np.stack([pre + (1.0 + 0.5 * p) * blob for p in range(phases)])
        store.write_case(
            f"CASE_{i:03d}",
            {
                "image": np.stack([pre, post[0]]).astype(np.float16),
                "mask": (blob > 0.5).astype(np.uint8),
                "phases": post.astype(np.float16),
            },
            {"affine": np.eye(4).tolist(), "spacing": [1, 1, 1], "split": "test" if i == n - 1 else "train"},
        )
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_prepared_store(tmp_path_factory.mktemp("vq") / "prepared.zarr")


def _tiny(stage: str, **changes: object) -> tuple:
    model_cfg, train_cfg = train_presets("tiny", stage)
    return model_cfg, replace(train_cfg, **changes)


@pytest.fixture(scope="module")
def patch_run(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model_cfg, cfg = _tiny("patch", steps=6, adv_start_step=3, save_every=3)
    out = tmp_path_factory.mktemp("patch_run")
    train_vqvae(store_path, out, train_config=cfg, model_config=model_cfg, seed=1)
    return out


def test_patch_sampler_uses_random_post_phases(store_path: Path) -> None:
    store = CaseStore.open(store_path)
    volumes = PreparedVolumes(store, ["CASE_000"])
    assert volumes.num_phases("CASE_000") == 3
    phases = store.read_array("CASE_000", "phases").astype(np.float32)
    batch = sample_patch_batch(volumes, np.random.default_rng(0), batch_size=12, size=(40, 48, 32))
    assert batch.shape == (12, 2, 40, 48, 32)
    used = {int(np.argmin([np.abs(b[1] - ph).max() for ph in phases])) for b in batch}
    assert len(used) > 1  # several post-contrast phases were drawn
    assert all(np.allclose(b[0], store.read_array("CASE_000", "image")[0].astype(np.float32)) for b in batch)


def test_tumor_patches_contain_tumor_and_uniform_patches_often_do_not(store_path: Path) -> None:
    store = CaseStore.open(store_path)
    ids = ["CASE_000", "CASE_001"]
    volumes = PreparedVolumes(store, ids)
    masks = {c: store.read_array(c, "mask") > 0 for c in ids}
    reads: list[tuple[str, tuple[int, ...]]] = []
    original_read = volumes.read

    def recording_read(case_id: str, **kwargs: object) -> np.ndarray:
        reads.append((case_id, tuple(kwargs["start"])))  # type: ignore[arg-type]
        return original_read(case_id, **kwargs)  # type: ignore[arg-type]

    volumes.read = recording_read  # type: ignore[method-assign]

    def tumor_hits(batch: np.ndarray) -> int:
        n = batch.shape[2:]
        hits = [masks[c][x : x + n[0], y : y + n[1], z : z + n[2]].any() for c, (x, y, z) in reads[-len(batch) :]]
        return int(sum(hits))

    size = (12, 12, 12)
    focused = sample_patch_batch(volumes, np.random.default_rng(0), batch_size=16, size=size, tumor_fraction=1.0)
    assert tumor_hits(focused) == 16
    uniform = sample_patch_batch(volumes, np.random.default_rng(0), batch_size=16, size=size)
    assert tumor_hits(uniform) < 16
    with pytest.raises(ValueError, match="tumor_fraction"):
        sample_patch_batch(volumes, np.random.default_rng(0), batch_size=1, size=size, tumor_fraction=1.5)


def test_patch_stage_writes_checkpoints_logs_and_latent_norm(patch_run: Path) -> None:
    names = {p.name for p in patch_run.iterdir()}
    assert {"final.pt", "last.pt", "step_6.pt", "metrics.jsonl", "metrics.csv", "config.json"} <= names
    ckpt = load_checkpoint(patch_run / "final.pt", kind="vqvae")
    assert ckpt["stage"] == "patch" and ckpt["step"] == 6
    lines = [json.loads(line) for line in (patch_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 7))
    assert "g_adv" not in lines[2] and "g_adv" in lines[3]  # adversarial loss starts at step index 3
    model, norm, config = load_vqvae(patch_run / "final.pt")
    normalised = norm.normalise(model.codebook)
    assert float(normalised.min()) == pytest.approx(-1.0, abs=1e-5) and float(normalised.max()) == pytest.approx(
        1.0, abs=1e-5
    )
    assert config.num_embeddings == 64 and not model.training


def test_volume_stage_leaves_encoder_and_codebook_bit_identical(
    store_path: Path, patch_run: Path, tmp_path: Path
) -> None:
    model_cfg, cfg = _tiny("volume", steps=2, volume_crop=None, adv_start_step=0)
    train_vqvae(store_path, tmp_path / "vol", train_config=cfg, init=patch_run / "final.pt", seed=2)
    before = load_checkpoint(patch_run / "final.pt")["model"]
    after = load_checkpoint(tmp_path / "vol" / "final.pt")["model"]
    frozen = [k for k in before if k.startswith(("net.encoder.", "net.quantizer."))]
    assert any("ema_w" in k for k in frozen) and any("embedding.weight" in k for k in frozen)
    for key in frozen:
        assert torch.equal(before[key], after[key]), key
    decoder = [k for k in before if k.startswith("net.decoder.") and k.endswith("weight")]
    assert any(not torch.equal(before[k], after[k]) for k in decoder)


def test_tumor_weighted_l1_adds_the_tumor_voxels_share() -> None:
    gen = torch.Generator().manual_seed(0)
    x, recon = torch.rand(2, 2, 4, 4, 4, generator=gen), torch.rand(2, 2, 4, 4, 4, generator=gen)
    mask = torch.zeros(2, 4, 4, 4, dtype=torch.uint8)
    mask[0, 1:3, 1:3, 1:3] = 1
    err = (recon - x).abs()
    l1, weighted = reconstruction_l1(recon, x, mask, 3.0)
    assert float(l1) == pytest.approx(float(err.mean()))
    assert float(weighted) == pytest.approx(float(err.mean() + 3.0 * (err * mask[:, None]).mean()))
    assert reconstruction_l1(recon, x, mask, 0.0)[1] is None and reconstruction_l1(recon, x, None, 3.0)[1] is None


def test_volume_sampler_masks_match_the_images(store_path: Path) -> None:
    store = CaseStore.open(store_path)
    volumes = PreparedVolumes(store, ["CASE_000"])
    masks: list[np.ndarray] = []
    images = sample_volume_batch(
        volumes, np.random.default_rng(3), batch_size=1, crop=None, multiple=16, masks_out=masks
    )
    plain = sample_volume_batch(volumes, np.random.default_rng(3), batch_size=1, crop=None, multiple=16)
    assert np.array_equal(images, plain)  # reading masks draws nothing
    truth = store.read_array("CASE_000", "mask") > 0
    assert masks[0].shape == images.shape[2:] and truth.any()
    assert np.array_equal(masks[0][: SHAPE[0], : SHAPE[1], : SHAPE[2]] > 0, truth)
    assert not masks[0][SHAPE[0] :].any()  # padding carries no tumor


def test_volume_stage_with_tumor_weight_logs_the_weighted_loss(
    store_path: Path, patch_run: Path, tmp_path: Path
) -> None:
    _, cfg = _tiny("volume", steps=2, volume_crop=None, adv_start_step=0, tumor_loss_weight=4.0)
    train_vqvae(store_path, tmp_path / "vol", train_config=cfg, init=patch_run / "final.pt", seed=2)
    rows = [json.loads(line) for line in (tmp_path / "vol" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["l1_tumor_weighted"] > r["l1"] for r in rows)  # every whole volume holds a tumor


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_continues_with_identical_losses(store_path: Path, tmp_path: Path) -> None:
    model_cfg, cfg = _tiny("patch", steps=5, adv_start_step=1, save_every=2, keep_last=2)
    train_vqvae(store_path, tmp_path / "full", train_config=cfg, model_config=model_cfg, seed=3)

    def crash_at_3(done: int, total: int, metrics: object) -> None:
        if done == 3:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_vqvae(store_path, tmp_path / "cut", train_config=cfg, model_config=model_cfg, seed=3, progress=crash_at_3)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 2
    result = train_vqvae(store_path, tmp_path / "cut", train_config=cfg, model_config=model_cfg, seed=3, resume=True)
    assert result.resumed_from == 2

    full = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    cut = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in cut] == [1, 2, 3, 4, 5]
    assert cut == full  # every loss, including the discriminator's, after the resume point
    a = load_checkpoint(tmp_path / "full" / "final.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "final.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(p.name for p in (tmp_path / "cut").glob("step_*.pt")) == ["step_4.pt", "step_5.pt"]


def test_crash_during_checkpoint_save_keeps_previous_checkpoint(
    store_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_cfg, cfg = _tiny("patch", steps=2, save_every=1)
    out = tmp_path / "run"
    train_vqvae(store_path, out, train_config=cfg, model_config=model_cfg, seed=4)
    good = load_checkpoint(out / "last.pt")

    real_replace = os.replace
    attempts: list[str] = []

    def broken_replace(src: object, dst: object) -> None:
        if str(dst).endswith(".pt"):  # the checkpoint's final rename fails, after its bytes were written
            attempts.append(Path(str(dst)).name)
            raise OSError("disk full (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        train_vqvae(store_path, out, train_config=replace(cfg, steps=3), model_config=model_cfg, seed=4, resume=True)
    monkeypatch.undo()
    assert attempts == ["step_3.pt"]
    kept = load_checkpoint(out / "last.pt")
    assert kept["step"] == 2
    assert all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])
    assert not list(out.glob("*.partial"))
    model, _, _ = load_vqvae(out / "last.pt")
    assert model.latent_channels == 8


def test_existing_run_is_not_overwritten_without_resume(store_path: Path, patch_run: Path) -> None:
    model_cfg, cfg = _tiny("patch", steps=1)
    with pytest.raises(FileExistsError, match="resume"):
        train_vqvae(store_path, patch_run, train_config=cfg, model_config=model_cfg)


def test_volume_stage_needs_a_patch_checkpoint(store_path: Path, tmp_path: Path) -> None:
    _, cfg = _tiny("volume")
    with pytest.raises(ValueError, match="init"):
        train_vqvae(store_path, tmp_path / "v", train_config=cfg)


def test_perceptual_loss_without_weights_file_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="perceptual_weights_path"):
        VQVAETrainConfig(perceptual=True)


def test_evaluation_writes_metrics_json_and_figure(store_path: Path, patch_run: Path, tmp_path: Path) -> None:
    _, cfg = _tiny("volume", steps=1)
    train_vqvae(store_path, tmp_path / "vol", train_config=cfg, init=patch_run / "final.pt", seed=5)
    summary = evaluate_vqvae(
        tmp_path / "vol" / "final.pt",
        store_path,
        tmp_path / "eval",
        patch_ckpt=patch_run / "final.pt",
        config=VQVAEEvalConfig(tiled=True, tile=8),
    )
    assert summary["num_cases"] == 1 and summary["cases"][0]["case_id"] == "CASE_002"
    mean = summary["mean"]
    for key in ("psnr_pre", "psnr_post", "ssim_pre", "ssim_post", "grid_score", "patch_only_grid_score"):
        assert np.isfinite(mean[key]), key
    case = summary["cases"][0]
    assert case["grid_departure"] == pytest.approx(abs(case["grid_score"] - 1.0))
    assert 0 < summary["codebook"]["used_fraction"] <= 1
    assert json.loads((tmp_path / "eval" / "vqvae_metrics.json").read_text())["num_cases"] == 1
    png = (tmp_path / "eval" / "vqvae_reconstruction.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_train_and_eval_commands(store_path: Path, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from cli.eval import eval_vqvae
    from cli.train import train_vqvae as train_cmd

    app = typer.Typer()
    app.command("train")(train_cmd)
    app.command("eval")(eval_vqvae)
    runner = CliRunner()
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"train": {"save_every": 1}}))
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(store_path),
            "--out",
            str(tmp_path / "p"),
            "--preset",
            "tiny",
            "--steps",
            "2",
            "--config",
            str(config),
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p" / "step_1.pt").is_file()
    res = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(store_path),
            "--out",
            str(tmp_path / "v"),
            "--preset",
            "tiny",
            "--stage",
            "volume",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 2 and "init" in res.output
    res = runner.invoke(
        app,
        [
            "eval",
            "--ckpt",
            str(tmp_path / "p" / "final.pt"),
            "--data",
            str(store_path),
            "--out",
            str(tmp_path / "e"),
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e" / "vqvae_metrics.json").is_file()


def test_loop_utils_rng_roundtrip_metric_log_and_ema(tmp_path: Path) -> None:
    from synbt_factory.training.runs import MetricLog, capture_rng_state, make_ema, restore_rng_state

    gen = np.random.default_rng(7)
    state = capture_rng_state({"sampler": gen})
    expected = (gen.random(3), torch.rand(3))
    restore_rng_state(state, {"sampler": gen})
    assert np.array_equal(gen.random(3), expected[0]) and torch.equal(torch.rand(3), expected[1])

    log = MetricLog(tmp_path / "m.jsonl")
    for step in range(1, 5):
        log.append(step, {"loss": torch.tensor(float(step))} | ({"d": 1.0} if step > 2 else {}))
    assert log.truncate_after(2) == 2 and [r["step"] for r in log.records()] == [1, 2]
    assert log.write_csv().read_text().splitlines()[0] == "step,loss"

    net = torch.nn.Linear(2, 1)
    ema = make_ema(net, decay=0.5)
    ema.update_parameters(net)  # the first update copies the weights
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(2.0)
    ema.update_parameters(net)
    assert torch.allclose(ema.module.weight, start + 1.0)


def test_ctrl_c_saves_the_step_it_stopped_at_and_resumes_identically(store_path: Path, tmp_path: Path) -> None:
    """Ctrl-C between checkpoints used to lose the steps since the last one (save_every=2: step 3 was lost)."""
    import signal

    from synbt_factory.training.runs import TrainingInterrupted

    model_cfg, cfg = _tiny("patch", steps=5, adv_start_step=1, save_every=2, keep_last=2)
    train_vqvae(store_path, tmp_path / "full", train_config=cfg, model_config=model_cfg, seed=3)

    def ctrl_c_at_3(done: int, total: int, metrics: object) -> None:
        if done == 3:
            signal.raise_signal(signal.SIGINT)

    # the handler the run must restore: Python's default, or SIG_IGN in a background job started without job control
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stopped:
        train_vqvae(
            store_path, tmp_path / "cut", train_config=cfg, model_config=model_cfg, seed=3, progress=ctrl_c_at_3
        )
    assert stopped.value.step == 3 and stopped.value.checkpoint == tmp_path / "cut" / "last.pt"
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 3
    assert signal.getsignal(signal.SIGINT) is handler_before
    result = train_vqvae(store_path, tmp_path / "cut", train_config=cfg, model_config=model_cfg, seed=3, resume=True)
    assert result.resumed_from == 3
    a = load_checkpoint(tmp_path / "full" / "final.pt")["model"]
    b = load_checkpoint(tmp_path / "cut" / "final.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluation_figure_shows_the_slice_holding_most_of_the_tumor_and_logs_no_case_metrics(
    patch_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reconstruction figure was drawn on the middle slice, which held no tumor when the tumor sat low."""
    import synbt_factory.evaluate.vqvae_eval as vqvae_eval

    store = CaseStore.create(tmp_path / "low_tumor.zarr", kind="prepared", card={})
    image = np.full((2, *SHAPE), 0.4, np.float16)
    image[:, 4:36, 4:44, :] = 0.6
    mask = np.zeros(SHAPE, np.uint8)
    mask[10:16, 12:20, 3:7] = 1  # slices 3..6 of 32: the middle slice (16) has no tumor
    mask[11:15, 13:17, 5] = 1
    image[1][mask > 0] = 1.5
    store.write_case(
        "CASE_LOW",
        {"image": image, "mask": mask},
        {"affine": np.eye(4).tolist(), "spacing": [1, 1, 1], "split": "test"},
    )
    drawn: dict[str, object] = {}
    original = vqvae_eval.save_comparison_figure

    def spy(columns: dict[str, np.ndarray], path: Path, **kwargs: object) -> Path:
        drawn.update(kwargs)
        return original(columns, path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(vqvae_eval, "save_comparison_figure", spy)
    with caplog.at_level("INFO", logger="synbt_factory"):
        evaluate_vqvae(patch_run / "final.pt", tmp_path / "low_tumor.zarr", tmp_path / "eval")
    # the per-case metrics go to vqvae_metrics.json; at INFO they were 7 log lines per case in the demo's log
    assert not [r for r in caplog.records if r.levelno >= 20 and "psnr_pre" in r.getMessage()], caplog.text
    z = drawn.get("z")
    assert isinstance(z, int) and 3 <= z <= 6, drawn
    assert (tmp_path / "eval" / "vqvae_reconstruction.png").read_bytes()[:4] == b"\x89PNG"


def test_volume_stage_without_init_names_the_flags_before_any_work(store_path: Path, tmp_path: Path) -> None:
    """It said 'the volume --stage needs init=<patch-stage checkpoint>' after announcing the run."""
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(
        app,
        [
            "train",
            "vqvae",
            "--stage",
            "volume",
            "--data",
            str(store_path),
            "--out",
            str(tmp_path / "run"),
            "--preset",
            "tiny",
            "--device",
            "cpu",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "--stage volume needs --init" in lines[0] and "init=" not in lines[0], result.output
    assert not (tmp_path / "run").exists()


def test_patch_stage_warm_start_begins_at_the_init_weights(store_path: Path, patch_run: Path, tmp_path: Path) -> None:
    """``--init`` on the patch stage fine-tunes a trained VQ-VAE instead of starting from random weights."""
    _, cfg = _tiny("patch", steps=1, lr=1e-12, adv_start_step=10, save_every=1)
    train_vqvae(store_path, tmp_path / "warm", train_config=cfg, init=patch_run / "final.pt", seed=5)
    train_vqvae(store_path, tmp_path / "cold", train_config=cfg, model_config=_tiny("patch")[0], seed=5)
    init = load_checkpoint(patch_run / "final.pt")["model"]
    warm = load_checkpoint(tmp_path / "warm" / "final.pt")["model"]
    cold = load_checkpoint(tmp_path / "cold" / "final.pt")["model"]
    convs = [k for k in init if k.startswith(("net.encoder.", "net.decoder.")) and k.endswith("conv.weight")]
    assert convs
    assert all(torch.allclose(warm[k], init[k], atol=1e-6) for k in convs)
    assert not all(torch.allclose(cold[k], init[k], atol=1e-3) for k in convs)
    assert json.loads((tmp_path / "warm" / "config.json").read_text())["init"] == str(patch_run / "final.pt")
