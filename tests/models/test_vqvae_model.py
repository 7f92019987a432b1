"""Patch-to-volume VQ-VAE model: latent geometry, patch-wise encoding, chunked quantiser, tiled decode."""

from __future__ import annotations

import pytest
import torch
from monai.networks.layers.vector_quantizer import EMAQuantizer

from synbt_factory.models import vqvae as vqvae_module
from synbt_factory.models.autoencoder import LatentAutoencoder
from synbt_factory.models.quantizer import (
    codebook_usage,
    embed_indices,
    nearest_code_indices,
    restart_dead_codes,
)
from synbt_factory.models.vqvae import (
    PatchVolumeVQVAE,
    VQVAEConfig,
    patch_chunks,
    tile_weight_map,
    vqvae_preset,
)


def _model(preset: str = "tiny", seed: int = 0) -> PatchVolumeVQVAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PatchVolumeVQVAE(vqvae_preset(preset)).eval()


def test_paper_config_latent_is_input_over_four_with_eight_channels() -> None:
    model = _model("paper")
    assert isinstance(model, LatentAutoencoder)
    assert (model.in_channels, model.latent_channels, model.downsample_factor) == (2, 8, 4)
    assert model.config.num_embeddings == 8192 and model.config.patch_size == 64
    x = torch.rand(1, 2, 64, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = model.encode(x)
    assert z.shape == (1, 8, 16, 16, 16)


def test_non_cubic_volume_encodes_to_quarter_size_and_decodes_back() -> None:
    model = _model()
    x = torch.rand(2, 2, 40, 48, 28, generator=torch.Generator().manual_seed(2))  # not multiples of the 16³ patch
    with torch.no_grad():
        z = model.encode(x)
        recon = model.decode(model.quantize(z))
    assert z.shape == (2, 8, 10, 12, 7)
    assert recon.shape == x.shape


def test_patchwise_encoding_places_each_patch_latent_at_its_grid_position() -> None:
    model = _model()
    x = torch.rand(1, 2, 32, 32, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        z = model.encode(x, patch_batch=3)
        single = model.encode_patches(x[:, :, 16:32, 0:16, 32:48])
        whole = model.encode_patches(x)  # one pass over the volume sees across patch borders
    assert torch.allclose(z[:, :, 4:8, 0:4, 8:12], single, atol=1e-6)  # batched convs may differ in the last bit
    assert not torch.allclose(z, whole)  # so patch-wise encoding is really patch-wise


def test_patch_batch_size_does_not_change_the_latent() -> None:
    model = _model()
    x = torch.rand(1, 2, 32, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.allclose(model.encode(x, patch_batch=1), model.encode(x, patch_batch=8), atol=1e-6)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6, 9, 13, 48, 64, 125, 1000])
@pytest.mark.parametrize("most", [4, 5, 8, 64])
def test_patch_chunks_cover_each_patch_once_leaving_alone_only_what_calls_of_four_leave_alone(
    n: int, most: int
) -> None:
    chunks = patch_chunks(n, most)
    assert [i for a, b in chunks for i in range(a, b)] == list(range(n))
    assert all(b - a <= most for a, b in chunks)
    lone = [(a, b) for a, b in chunks if b - a == 1]
    assert lone == ([(n - 1, n)] if n % 4 == 1 else [])


# (B, X, Y, Z) → patches of the tiny preset's 16³: 1, 2, 5 (a lone tail in calls of 4), 6, 9, 3 × 9 (calls of 4
# straddle the volumes), 27 (a lone tail) and 64
@pytest.mark.parametrize(
    "shape",
    [
        (1, 16, 16, 16),
        (1, 32, 16, 16),
        (1, 80, 16, 16),
        (1, 48, 32, 16),
        (1, 48, 48, 16),
        (3, 48, 48, 16),
        (1, 48, 48, 48),
        (1, 64, 64, 64),
    ],
)
def test_default_encoding_equals_calls_of_four_patches_bit_for_bit(shape: tuple[int, ...], monkeypatch) -> None:
    """The default packs a volume's patches into few encoder calls (fast on a loaded CPU) and still gives the
    latent of 4-patch calls exactly, also when the memory budget forces several calls."""
    model = _model()
    x = 3 * torch.rand(shape[0], 2, *shape[1:], generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        reference = model.encode(x, patch_batch=4)
        assert torch.equal(model.encode(x), reference)
        per_patch = model.config.channels[0] * (model.config.patch_size // model.config.strides[0]) ** 3 * 4
        monkeypatch.setattr(vqvae_module, "ENCODE_CHUNK_BYTES", 5 * per_patch)  # calls of at most 5 patches
        assert model.patches_per_call() == 5
        assert torch.equal(model.encode(x), reference)


@pytest.mark.parametrize("chunk_rows", [1, 7, 500, 4096, None])
def test_chunked_indices_are_bit_identical_to_monai(chunk_rows: int | None) -> None:
    gen = torch.Generator().manual_seed(5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        quantizer = EMAQuantizer(spatial_dims=3, num_embeddings=8192, embedding_dim=8).eval()
    codes = quantizer.embedding.weight
    # half the vectors sit very close to a code (near-ties between neighbours), half are arbitrary
    near = codes[torch.randint(8192, (1, 6, 9, 5), generator=gen)].permute(0, 4, 1, 2, 3)
    z = torch.cat([near + 1e-3 * torch.randn(near.shape, generator=gen), 0.7 * torch.randn(near.shape, generator=gen)])
    _, _, monai_idx = quantizer.quantize(z)
    ours = nearest_code_indices(z, codes, chunk_rows=chunk_rows)
    assert ours.dtype == monai_idx.dtype and torch.equal(ours, monai_idx)


def test_model_quantize_matches_monai_vector_quantizer_and_returns_exact_codes() -> None:
    model = _model()
    x = torch.rand(1, 2, 32, 32, 16, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        z = model.encode(x)
        monai_idx = model.net.quantizer.quantize(z)  # MONAI's VectorQuantizer on the same latent
        ours_idx = model.quantize_indices(z)
        z_q = model.quantize(z)
    assert torch.equal(ours_idx, monai_idx)
    assert torch.equal(z_q, embed_indices(ours_idx, model.codebook))
    flat = z_q.permute(0, 2, 3, 4, 1).reshape(-1, 8)
    assert torch.equal(flat, model.codebook[ours_idx.reshape(-1)])


def test_tiled_decode_matches_one_pass_decode_within_tolerance() -> None:
    """Tolerance: max |tiled − one-pass| ≤ 5 % and mean ≤ 0.2 % of the one-pass output's std.

    (Measured with this tiny model: max ≈ 0.8 %, mean ≈ 0.04 %; the decoder's receptive field is
    wider than the 4-voxel latent half-overlap, so tiles are not exact near their borders.)
    """
    model = _model()
    x = torch.rand(1, 2, 64, 96, 80, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        z_q = model.quantize(model.encode(x))  # latent 16 × 24 × 20
        full = model.decode(z_q)
        tiled = model.decode_tiled(z_q, tile=16, overlap=0.5, mode="gaussian")
        hard = model.decode_tiled(z_q, tile=8, overlap=0.0, mode="constant")  # no blending at all
    scale = float(full.std())
    err = (tiled - full).abs()
    assert tiled.shape == full.shape
    assert float(err.max()) <= 0.05 * scale
    assert float(err.mean()) <= 0.002 * scale
    assert float((hard - full).abs().mean()) > 10 * float(err.mean())  # blending is what makes it close


def test_tile_weights_are_separable_products() -> None:
    w = tile_weight_map((8, 6, 4), mode="gaussian")
    outer = w[:, 3:4, 2:3] * w[4:5, :, 2:3] * w[4:5, 3:4, :] / (w[4, 3, 2] ** 2)
    assert w.shape == (8, 6, 4) and float(w.min()) > 0
    assert torch.allclose(w, outer, rtol=1e-5)


def test_volume_stage_freeze_keeps_encoder_and_quantizer_in_eval_mode() -> None:
    model = _model()
    model.freeze_encoder_and_codebook()
    model.train()
    assert not model.net.encoder.training and not model.net.quantizer.training
    assert model.net.decoder.training
    assert not any(p.requires_grad for p in model.net.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder_parameters())


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="patch_size"):
        VQVAEConfig(patch_size=30)
    with pytest.raises(ValueError, match="strides"):
        VQVAEConfig(strides=(1, 3, 2))


def test_codebook_usage_uniform_and_collapsed() -> None:
    uniform = codebook_usage(torch.arange(16).repeat(5), 16)
    collapsed = codebook_usage(torch.zeros(80, dtype=torch.long), 16)
    assert uniform["perplexity"] == pytest.approx(16.0) and uniform["used_fraction"] == 1.0
    assert collapsed["perplexity"] == pytest.approx(1.0) and collapsed["used_fraction"] == 1 / 16


def test_dead_codes_are_reseeded_from_batch_latents() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(9)
        quantizer = EMAQuantizer(spatial_dims=3, num_embeddings=32, embedding_dim=4)
    quantizer.ema_cluster_size[:10] = 5.0  # codes 0..9 alive, 10..31 dead
    alive_before = quantizer.embedding.weight[:10].clone()
    z = torch.randn(1, 4, 3, 3, 3, generator=torch.Generator().manual_seed(10))
    n = restart_dead_codes(quantizer, z, threshold=0.01, generator=torch.Generator().manual_seed(11))
    vectors = z.permute(0, 2, 3, 4, 1).reshape(-1, 4)
    assert n == 22
    assert torch.equal(quantizer.embedding.weight[:10], alive_before)
    for code in quantizer.embedding.weight[10:]:
        assert (vectors == code).all(dim=1).any()
    assert torch.equal(quantizer.ema_w[10:], quantizer.embedding.weight[10:])
