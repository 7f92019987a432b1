"""Memory-bounded nearest-code search for VQ-VAE latents.

MONAI's :class:`monai.networks.layers.vector_quantizer.EMAQuantizer` builds the full
(voxels × codes) distance matrix, its negation and a float one-hot of the same size, plus an
int64 one-hot inside ``one_hot``: quantising a 32×48×48 latent against 8192 codes peaks near
10 GB. For inference only the indices are needed, so this module evaluates MONAI's exact
expression ``‖z‖² + ‖e‖² − 2 z·eᵀ`` on row chunks and keeps only each chunk's argmax of the
negated distances. The floating-point operations per element are the same as MONAI's, so the
indices are bit-identical (tested), while the peak is two (chunk × codes) float32 buffers.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "chunk_rows_for",
    "nearest_code_indices",
    "embed_indices",
    "code_histogram",
    "codebook_usage",
    "restart_dead_codes",
]

#: Budget of one (chunk × codes) float32 distance buffer (two are alive at once).
DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024


def chunk_rows_for(num_codes: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so that one (rows × ``num_codes``) float32 buffer fits in ``chunk_bytes``."""
    if num_codes < 1:
        raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    if chunk_bytes < 4 * num_codes:
        raise ValueError(f"chunk_bytes must hold at least one row ({4 * num_codes} bytes), got {chunk_bytes}")
    return max(1, chunk_bytes // (4 * num_codes))


def _channels_last_flat(z: torch.Tensor) -> torch.Tensor:
    """(B, D, *S) → (B·prod(S), D) float32, contiguous, in MONAI's flattening order."""
    perm = [0, *range(2, z.ndim), 1]
    return z.float().permute(perm).contiguous().view(-1, z.shape[1])


@torch.no_grad()
def nearest_code_indices(z: torch.Tensor, codebook: torch.Tensor, *, chunk_rows: int | None = None) -> torch.Tensor:
    """Index of the nearest codebook entry for every latent vector, chunk by chunk.

    Same arithmetic and tie-breaking as MONAI's ``EMAQuantizer.quantize`` (``torch.max`` of the
    negated squared Euclidean distances), so the result equals MONAI's indices bit for bit.

    Args:
        z: continuous latent (B, D, X, Y, Z) (any number of spatial axes).
        codebook: (K, D) code vectors.
        chunk_rows: latent vectors per chunk; default keeps one distance buffer near 16 MiB.

    Returns:
        (B, X, Y, Z) int64 code indices in [0, K).
    """
    if z.ndim < 3:
        raise ValueError(f"z must be (B, D, *spatial), got shape {tuple(z.shape)}")
    if codebook.ndim != 2 or codebook.shape[1] != z.shape[1]:
        raise ValueError(f"codebook must be (K, {z.shape[1]}), got {tuple(codebook.shape)}")
    num_codes = codebook.shape[0]
    rows = chunk_rows if chunk_rows is not None else chunk_rows_for(num_codes)
    if rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {rows}")
    out_shape = [z.shape[0], *z.shape[2:]]
    with torch.autocast(device_type=z.device.type, enabled=False):
        flat = _channels_last_flat(z)
        weight_t = codebook.float().t()
        code_sq = (weight_t**2).sum(dim=0, keepdim=True)  # (1, K), as MONAI
        indices = torch.empty(flat.shape[0], dtype=torch.long, device=z.device)
        for start in range(0, flat.shape[0], rows):
            part = flat[start : start + rows]
            cross = torch.mm(part, weight_t)
            cross.mul_(2)  # exact (power of two), equals MONAI's ``2 * mm``
            dist = (part**2).sum(dim=1, keepdim=True) + code_sq
            dist.sub_(cross)
            del cross
            dist.neg_()
            indices[start : start + rows] = torch.max(dist, dim=1)[1]
            del dist
    return indices.view(out_shape)


def embed_indices(indices: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Code vectors of ``indices``: (B, X, Y, Z) int64 → (B, D, X, Y, Z) (MONAI's ``embed``)."""
    emb = torch.nn.functional.embedding(indices, codebook)
    perm = [0, emb.ndim - 1, *range(1, emb.ndim - 1)]
    return emb.permute(perm).contiguous()


def code_histogram(indices: torch.Tensor, num_codes: int) -> torch.Tensor:
    """(K,) int64 counts of each code in ``indices`` (accumulate these over cases)."""
    if num_codes < 1:
        raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    return torch.bincount(indices.reshape(-1).cpu(), minlength=num_codes)


def codebook_usage(counts_or_indices: torch.Tensor, num_codes: int, *, is_counts: bool = False) -> dict[str, float]:
    """Perplexity and used fraction of a codebook.

    Perplexity is ``exp(−Σ p_k log p_k)`` of the code histogram (MONAI's ``VectorQuantizer``
    definition): ``num_codes`` for perfectly uniform use, 1 for a collapsed codebook.

    Args:
        counts_or_indices: code indices (any shape), or a (K,) histogram when ``is_counts``.
        num_codes: codebook size K.

    Returns:
        ``{"perplexity", "used_fraction", "used_codes"}``.
    """
    counts = counts_or_indices if is_counts else code_histogram(counts_or_indices, num_codes)
    if counts.numel() != num_codes:
        raise ValueError(f"histogram has {counts.numel()} bins, expected {num_codes}")
    counts = counts.double().cpu()
    total = counts.sum()
    if total == 0:
        raise ValueError("no code indices to measure")
    probs = counts / total
    nz = probs[probs > 0]
    entropy = float(-(nz * nz.log()).sum())
    used = int((counts > 0).sum())
    return {"perplexity": math.exp(entropy), "used_fraction": used / num_codes, "used_codes": float(used)}


@torch.no_grad()
def restart_dead_codes(
    quantizer: torch.nn.Module,
    z: torch.Tensor,
    *,
    threshold: float,
    generator: torch.Generator,
    new_count: float = 1.0,
) -> int:
    """Re-seed unused codes of a MONAI ``EMAQuantizer`` with latent vectors of the current batch.

    MONAI's EMA update starts every cluster size at 0, so a code not hit by the very first batch
    gets ``ema_w / ≈ε`` — a vector of norm ~1e5 that is never chosen again (the codebook collapses
    to the few codes of batch 1). Codes whose EMA cluster size is below ``threshold`` are replaced
    by randomly drawn encoder outputs ``z`` (the usual "dead code restart"), with EMA state set so
    that the EMA formula reproduces the new vector (``ema_w = new_count · e``, cluster size ``new_count``).

    Args:
        quantizer: ``monai.networks.layers.vector_quantizer.EMAQuantizer``.
        z: continuous encoder output of the batch (B, D, *S).
        threshold: EMA cluster size below which a code counts as dead.
        generator: draws which latent vectors become the new codes.
        new_count: EMA cluster size given to a restarted code.

    Returns:
        Number of codes restarted.
    """
    dead = (quantizer.ema_cluster_size < threshold).nonzero().flatten()
    if dead.numel() == 0:
        return 0
    flat = _channels_last_flat(z.detach())
    pick = torch.randint(flat.shape[0], (dead.numel(),), generator=generator, device=generator.device)
    new = flat[pick.to(flat.device)].to(quantizer.embedding.weight.dtype)
    quantizer.embedding.weight.data[dead] = new
    quantizer.ema_w.data[dead] = new * new_count
    quantizer.ema_cluster_size.data[dead] = new_count
    return int(dead.numel())
