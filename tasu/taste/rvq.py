"""Residual vector quantiser (RVQ) with EMA codebooks, k-means init, quantizer dropout and a straight-through output.

Shapes: z [B, L, D] continuous vectors (one per text token in TASTE), mask [B, L] (True = valid),
N codebooks of K codes each. Stage n quantises the residual r_n = z - sum_{m<n} q_m to its nearest code q_n.

EMA update of stage n (training mode, valid positions only, before the update the codes are chosen):
    n_k   = number of residuals assigned to code k in this batch          s_k = their sum
    N_k  <- decay * N_k + (1 - decay) * n_k                              (cluster_size)
    S_k  <- decay * S_k + (1 - decay) * s_k                              (embed_sum)
    N'_k  = (N_k + eps) / (sum_j N_j + K * eps) * sum_j N_j              (Laplace smoothing: no division by 0)
    e_k   = S_k / N'_k
The codebooks are buffers, not parameters: no optimizer touches them, and no codebook loss is needed.

k-means init: training batches are collected until at least `kmeans_init_vectors` valid vectors are in hand (0 = the
first batch alone); meanwhile the quantiser passes z through unchanged (codes = -1, no loss), a no-VQ warm-up like
TASTE's own. Then each stage runs seeded k-means++ + Lloyd on its own residuals of the collected vectors, and
N_k = 1, S_k = e_k (as if each centre had been seen once). Collect well over K vectors: with fewer, centres sit on
single points, later stages fit near-zero residuals, and on new data only a handful of codes win (unstructured
high-dimensional data, e.g. isotropic noise, shows that collapse whatever the init: watch `used_fraction`).
Dead-code replacement (optional): after the EMA update, codes with N_k < threshold are reset to random residuals of
the current batch (N_k = threshold, S_k = e_k * N_k).

Quantizer dropout (training only): with probability `dropout_prob` a sample uses only the first n ~ U{1..N}
codebooks (drawn per sample), otherwise all N. The residual chain itself does not depend on dropout, so every stage
still sees its true residuals (codes for all N stages are returned and every codebook is updated); only the output
sum and the commitment loss are restricted to the active prefix. Eval mode uses all N unless `n_quantizers` is given.

Loss: commitment beta * sum_n (1 / #valid) * sum over the valid positions of samples using stage n of
mean_dims (r_n - sg(q_n))^2 (stages dropped for a sample add nothing; the divisor stays #valid).
Output: z + sg(q - z) with q = sum of the active q_n (straight-through: the gradient w.r.t. z is the identity).

Under torch.distributed (DDP / DeepSpeed) the batch statistics n_k, s_k are all-reduced and rank 0's k-means init and
replacement vectors are broadcast, so every rank keeps identical codebooks; these are collectives, so in training
mode every rank must call forward equally often. Codebook buffers stay fp32 when the module is cast to bf16 / fp16
(EMA in half precision would lose the (1 - decay) increments).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tasu.taste.units import _sq_dist, fit_kmeans


@dataclass
class RVQOutput:
    """quantized [B, L, D] (straight-through), codes [B, L, N] long (all N stages), commit_loss scalar,
    n_active [B] long (codebooks summed per sample), perplexity [N] and used_fraction [N] of the codes
    chosen at valid positions in this batch (perplexity = exp(entropy of the code histogram), in [1, K])."""

    quantized: Tensor
    codes: Tensor
    commit_loss: Tensor
    n_active: Tensor
    perplexity: Tensor
    used_fraction: Tensor


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class ResidualVQ(nn.Module):
    def __init__(self, num_codebooks: int, codebook_size: int, dim: int, decay: float = 0.99, epsilon: float = 1e-5,
                 beta: float = 0.25, kmeans_init: bool = True, kmeans_iters: int = 10, dropout_prob: float = 0.0,
                 dead_code_threshold: float = 0.0, seed: int = 0, sync_distributed: bool = True,
                 kmeans_init_vectors: int = 0):
        super().__init__()
        if num_codebooks < 1 or codebook_size < 2 or dim < 1:
            raise ValueError(f"ResidualVQ: need codebooks >= 1, codebook_size >= 2, dim >= 1; got {num_codebooks}, "
                             f"{codebook_size}, {dim}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ResidualVQ: decay must be in (0, 1), got {decay}")
        if not 0.0 <= dropout_prob <= 1.0:
            raise ValueError(f"ResidualVQ: dropout_prob must be in [0, 1], got {dropout_prob}")
        self.num_codebooks, self.codebook_size, self.dim = num_codebooks, codebook_size, dim
        self.decay, self.epsilon, self.beta = decay, epsilon, beta
        self.kmeans_iters, self.dropout_prob, self.dead_code_threshold = kmeans_iters, dropout_prob, dead_code_threshold
        self.seed, self.sync_distributed, self.kmeans_init_vectors = seed, sync_distributed, kmeans_init_vectors
        self._init_buffer: list[Tensor] = []                                   # vectors collected for the k-means init
        self._gen = torch.Generator().manual_seed(seed)                       # CPU: device-agnostic randomness
        init = torch.randn(num_codebooks, codebook_size, dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("embed", init)                                   # [N, K, D] codes e_k
        self.register_buffer("cluster_size", torch.ones(num_codebooks, codebook_size))   # [N, K] N_k
        self.register_buffer("embed_sum", init.clone())                       # [N, K, D] S_k
        self.register_buffer("initted", torch.tensor(not kmeans_init))

    # -- precision: codebook statistics stay fp32 whatever the module is cast to ---------------------------------
    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        for name in ("embed", "cluster_size", "embed_sum"):
            buf = getattr(self, name)
            if buf.dtype != torch.float32:
                setattr(self, name, buf.float())
        return self

    # -- public API ------------------------------------------------------------------------------------------------
    def forward(self, z: Tensor, mask: Tensor | None = None, n_quantizers: int | None = None) -> RVQOutput:
        """Quantise z [B, L, D] (mask [B, L], True = valid); in training mode also collect vectors for the k-means
        init and update the codebooks. Until the init has happened the output is z itself (see the module doc)."""
        b, seq, d = self._check_input(z, mask)
        mask = torch.ones(b, seq, dtype=torch.bool, device=z.device) if mask is None else mask.to(z.device)
        zf = z.float()
        if not bool(self.initted):
            if self.training:
                self._collect_for_init(zf[mask].detach())
            if not bool(self.initted):
                return self._pass_through(z, mask)
        n_active = self._n_active(b, n_quantizers, z.device)                  # [B]
        active = torch.arange(self.num_codebooks, device=z.device).unsqueeze(0) < n_active.unsqueeze(1)   # [B, N]

        residual = zf
        q_sum = torch.zeros_like(zf)
        codes, commit = [], zf.new_zeros(())
        n_valid = mask.sum().clamp_min(1)
        for n in range(self.num_codebooks):
            emb = self.embed[n]                                                # [K, D], pre-update
            idx = _sq_dist(residual.detach().reshape(-1, d), emb).argmin(dim=1).view(b, seq)   # [B, L]
            q = emb[idx]                                                       # [B, L, D]
            use = mask & active[:, n].unsqueeze(1)                             # [B, L]
            err = (residual - q).pow(2).mean(dim=-1)                          # [B, L]; q is a buffer: no grad to it
            commit = commit + (err * use).sum() / n_valid
            q_sum = q_sum + q * active[:, n].view(b, 1, 1)
            if self.training:
                self._ema_update(n, residual[mask].detach(), idx[mask])
            codes.append(idx)
            residual = residual - q
        codes_t = torch.stack(codes, dim=-1)                                   # [B, L, N]
        quantized = (zf + (q_sum - zf).detach()).to(z.dtype)
        perplexity, used = self._usage(codes_t[mask])
        return RVQOutput(quantized=quantized, codes=codes_t, commit_loss=self.beta * commit, n_active=n_active,
                         perplexity=perplexity, used_fraction=used)

    @torch.no_grad()
    def encode(self, z: Tensor, n_quantizers: int | None = None) -> Tensor:
        """codes [B, L, n] (n = n_quantizers or N) without touching the codebooks."""
        if not bool(self.initted):
            raise RuntimeError("ResidualVQ.encode: the codebooks are not initialised yet (k-means init still "
                               "collecting vectors); train first or load a checkpoint")
        b, seq, d = self._check_input(z, None)
        n_use = self._check_n(n_quantizers)
        residual, codes = z.float(), []
        for n in range(n_use):
            idx = _sq_dist(residual.reshape(-1, d), self.embed[n]).argmin(dim=1).view(b, seq)
            codes.append(idx)
            residual = residual - self.embed[n][idx]
        return torch.stack(codes, dim=-1)

    def decode(self, codes: Tensor) -> Tensor:
        """[B, L, D] fp32 sum of the codes of the first n codebooks, codes [B, L, n] (n <= N); a code < 0 adds 0."""
        if codes.dim() != 3 or not 1 <= codes.shape[-1] <= self.num_codebooks:
            raise ValueError(f"ResidualVQ.decode: codes must be [B, L, n] with 1 <= n <= {self.num_codebooks}, "
                             f"got {tuple(codes.shape)}")
        if int(codes.max()) >= self.codebook_size:
            raise ValueError(f"ResidualVQ.decode: code {int(codes.max())} >= codebook_size {self.codebook_size}")
        out = torch.zeros(*codes.shape[:2], self.dim, device=self.embed.device)
        for n in range(codes.shape[-1]):
            c = codes[..., n]
            out = out + self.embed[n][c.clamp_min(0)] * (c >= 0).unsqueeze(-1)
        return out

    # -- internals -------------------------------------------------------------------------------------------------
    def _check_input(self, z: Tensor, mask: Tensor | None) -> tuple[int, int, int]:
        if z.dim() != 3 or z.shape[-1] != self.dim:
            raise ValueError(f"ResidualVQ: input must be [B, L, {self.dim}], got {tuple(z.shape)}")
        if mask is not None and (mask.shape != z.shape[:2] or mask.dtype != torch.bool):
            raise ValueError(f"ResidualVQ: mask must be bool [B, L] = {tuple(z.shape[:2])}, got "
                             f"{mask.dtype} {tuple(mask.shape)}")
        return z.shape[0], z.shape[1], z.shape[2]

    def _check_n(self, n_quantizers: int | None) -> int:
        if n_quantizers is None:
            return self.num_codebooks
        if not 1 <= n_quantizers <= self.num_codebooks:
            raise ValueError(f"ResidualVQ: n_quantizers must be in [1, {self.num_codebooks}], got {n_quantizers}")
        return n_quantizers

    def _n_active(self, b: int, n_quantizers: int | None, device: torch.device) -> Tensor:
        if n_quantizers is not None or not self.training or self.dropout_prob == 0.0:
            return torch.full((b,), self._check_n(n_quantizers), dtype=torch.long, device=device)
        drop = torch.rand(b, generator=self._gen) < self.dropout_prob
        prefix = torch.randint(1, self.num_codebooks + 1, (b,), generator=self._gen)
        return torch.where(drop, prefix, torch.full_like(prefix, self.num_codebooks)).to(device)

    @property
    def is_initialised(self) -> bool:
        """False while vectors are still being collected for the k-means init (outputs pass through)."""
        return bool(self.initted)

    def _pass_through(self, z: Tensor, mask: Tensor) -> RVQOutput:
        b, seq = mask.shape
        n = self.num_codebooks
        return RVQOutput(quantized=z, codes=torch.full((b, seq, n), -1, dtype=torch.long, device=z.device),
                         commit_loss=z.new_zeros((), dtype=torch.float32),
                         n_active=torch.zeros(b, dtype=torch.long, device=z.device),
                         perplexity=torch.ones(n, device=z.device), used_fraction=torch.zeros(n, device=z.device))

    @torch.no_grad()
    def _collect_for_init(self, x: Tensor) -> None:
        """Buffer x [M, D]; once rank 0 holds >= kmeans_init_vectors, every rank takes part in the init."""
        self._init_buffer.append(x)
        have = sum(t.shape[0] for t in self._init_buffer)
        ready = torch.tensor(float(have >= max(self.kmeans_init_vectors, 1)), device=x.device)
        if self.sync_distributed and _distributed():
            dist.broadcast(ready, src=0)                                       # rank 0 decides for everyone
        if bool(ready):
            self._kmeans_init(torch.cat(self._init_buffer))
            self._init_buffer = []

    @torch.no_grad()
    def _kmeans_init(self, x: Tensor) -> None:
        """x [M, D] collected valid vectors; stage n clusters the residuals left by stages < n."""
        rank0 = not (self.sync_distributed and _distributed()) or dist.get_rank() == 0
        if rank0:
            if x.shape[0] == 0:
                raise ValueError("ResidualVQ: no valid vector to initialise the codebooks from (all masked)")
            residual = x
            for n in range(self.num_codebooks):
                c = fit_kmeans(residual, self.codebook_size, self.kmeans_iters, seed=self.seed + n)
                self.embed[n].copy_(c)
                residual = residual - c[_sq_dist(residual, c).argmin(dim=1)]
        if self.sync_distributed and _distributed():
            dist.broadcast(self.embed, src=0)
        self.embed_sum.copy_(self.embed)
        self.cluster_size.fill_(1.0)
        self.initted.fill_(True)

    @torch.no_grad()
    def _ema_update(self, n: int, r: Tensor, idx: Tensor) -> None:
        """r [M, D] residuals at valid positions, idx [M] their codes (chosen with the pre-update codebook)."""
        k = self.codebook_size
        counts = torch.bincount(idx, minlength=k).float()                      # n_k  [K]
        sums = torch.zeros(k, self.dim, device=r.device).index_add_(0, idx, r)   # s_k [K, D]
        if self.sync_distributed and _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size[n].mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embed_sum[n].mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.cluster_size[n].sum()
        smoothed = (self.cluster_size[n] + self.epsilon) / (total + k * self.epsilon) * total
        self.embed[n].copy_(self.embed_sum[n] / smoothed.unsqueeze(1))
        if self.dead_code_threshold > 0.0:
            self._replace_dead(n, r)

    @torch.no_grad()
    def _replace_dead(self, n: int, r: Tensor) -> None:
        dead = (self.cluster_size[n] < self.dead_code_threshold).nonzero().squeeze(1)      # same on every rank
        if dead.numel() == 0:
            return
        if r.shape[0] > 0:
            pick = torch.randint(r.shape[0], (dead.numel(),), generator=self._gen).to(r.device)
            new = r[pick].clone()                                              # [n_dead, D]
        else:  # this rank saw only padding; under DDP rank 0's vectors arrive below
            new = self.embed[n, dead].clone()
        if self.sync_distributed and _distributed():
            dist.broadcast(new, src=0)
        self.embed[n, dead] = new
        self.cluster_size[n, dead] = self.dead_code_threshold
        self.embed_sum[n, dead] = new * self.dead_code_threshold

    def _usage(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """codes [M, N] at valid positions -> perplexity [N], used_fraction [N]."""
        k = self.codebook_size
        if codes.shape[0] == 0:
            return (torch.ones(self.num_codebooks, device=codes.device),
                    torch.zeros(self.num_codebooks, device=codes.device))
        hist = torch.stack([torch.bincount(codes[:, n], minlength=k) for n in range(self.num_codebooks)]).float()
        p = hist / hist.sum(dim=1, keepdim=True)                               # [N, K]
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
        return entropy.exp(), (hist > 0).float().mean(dim=1)

    def extra_repr(self) -> str:
        bits = self.num_codebooks * math.log2(self.codebook_size)
        return (f"codebooks={self.num_codebooks}, codebook_size={self.codebook_size}, dim={self.dim}, "
                f"decay={self.decay}, beta={self.beta}, dropout_prob={self.dropout_prob}, bits_per_token={bits:g}")
