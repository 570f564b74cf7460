"""The recording forward: the model runs in ``analog`` mode and removable forward hooks on the sites feed
the reservoirs; an :class:`OutlierFilter` leaves out the tokens that stay outliers behind the prefix."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..model_surgery import spiking_sites
from ..prefix import prefixed_inputs
from ..progress import progress_bar
from ..runtime import runtime_of
from ..sites import site_type
from .reservoir import SiteReservoir


def record_batch(model: nn.Module, batch: torch.Tensor) -> None:
    """One calibration forward: the backbone (behind the prefix, when one is installed), then the head's
    input site only. The logits are never needed, so the lm_head matmul (a fifth of SmolLM2's forward)
    is skipped; every site sees exactly what the full forward would show it."""
    hidden = model.model(**prefixed_inputs(model, batch)).last_hidden_state
    model.lm_head.sites["head_in"](hidden, need_frames=False)


def recorded_rows(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor | None:
    """Which rows of ``x`` (its shape without the channel axis) belong to kept tokens, as an expanded view
    of ``keep`` [B, L] (nothing of x's size is allocated), or None when every row is kept. The token axis
    of a site tensor is 1 for [B, L, C] and 2 for [B, H, L, ...] (q, k, v, softmax rows); k/v also hold
    the prefix in front (kept)."""
    if keep is None or bool(keep.all()):
        return None
    axis = 1 if x.ndim == 3 else 2
    length = x.shape[axis]
    if x.ndim < 3 or x.shape[0] != keep.shape[0] or length < keep.shape[1]:
        return None
    if length > keep.shape[1]:
        keep = torch.cat([keep.new_ones(keep.shape[0], length - keep.shape[1]), keep], dim=1)
    keep = keep.view(keep.shape[0], *([1] * (axis - 1)), length, *([1] * (x.ndim - 2 - axis)))
    return keep.to(x.device).expand(x.shape[:-1])


@dataclass
class OutlierFilter:
    """PrefixQuant's outlier statistic at the down_proj inputs: a token whose max|x| exceeds ``eta`` times
    the batch median is left out of every site recorded after that point of the forward (its own layer's
    down_proj input and all later layers). ``eta=None`` keeps every token."""

    eta: float | None
    keep: torch.Tensor | None = None          # [B, L] of the current batch, True = recorded
    left_out: int = 0

    def start_batch(self, batch: torch.Tensor) -> None:
        self.keep = torch.ones(batch.shape, dtype=torch.bool, device=batch.device)

    def observe(self, x: torch.Tensor) -> None:
        if self.eta is None or self.keep is None:
            return
        x = x.detach()
        token_max = torch.maximum(x.amax(-1), -x.amin(-1))     # max|x| without an |x| copy of x
        if token_max.shape != self.keep.shape:
            return
        outliers = token_max > self.eta * token_max.median().clamp_min(1e-12)
        new = outliers & self.keep
        if bool(new.any()):
            self.left_out += int(new.sum())
            self.keep = self.keep & ~outliers


@dataclass
class MapSampler:
    """A softmax site's reservoir fed by the blocked attention, which never holds the whole map: the reservoir
    draws its positions before the blocks run and takes their values after, as :meth:`SiteReservoir.add` would
    take them from the dense map (same draws, same rows left out)."""

    reservoir: SiteReservoir
    outliers: OutlierFilter
    _pending: tuple | None = None

    def positions(self, shape: torch.Size, device: torch.device) -> torch.Tensor:
        positions = self.reservoir.draw(shape.numel(), device)
        self._pending = (shape, positions)
        return torch.arange(shape.numel(), device=device) if positions is None else positions

    def record(self, values: torch.Tensor, row_max: torch.Tensor) -> None:
        shape, positions = self._pending
        self._pending = None
        _, heads, length, keys_per_row = shape
        keep = self.outliers.keep
        if keep is None or bool(keep.all()) or tuple(keep.shape) != (shape[0], length):
            self.reservoir.observe_max(row_max.amax().reshape(1))
            self.reservoir.offer(values, positions)
            self.reservoir.seen += shape.numel()
            return
        keep = keep.to(values.device)
        self.reservoir.observe_max(torch.where(keep[:, None, :], row_max, row_max.new_zeros(())).amax().reshape(1))
        flat = torch.arange(shape.numel(), device=values.device) if positions is None else positions
        kept = keep[flat // (heads * length * keys_per_row), (flat // keys_per_row) % length]
        self.reservoir.offer(values, positions, kept)
        self.reservoir.seen += int(keep.sum()) * heads * keys_per_row


@dataclass
class Recording:
    """What the recording forward returns: a reservoir per site and the outlier tokens it left out
    (None when it left none out by design: no filter)."""

    reservoirs: dict[str, SiteReservoir]
    outlier_tokens_left_out: int | None = None


@torch.no_grad()
def record_activations(model: nn.Module, windows: torch.Tensor, site_names: list[str], capacity: int,
                       batch_size: int = 4, seed: int = 0, show_progress: bool = True,
                       outlier_eta: float | None = None) -> Recording:
    """Run the analog model over ``windows`` (behind the prefix) and sample every named site."""
    sites = spiking_sites(model)
    reservoirs = {name: SiteReservoir(name, capacity, sites[name].channels, seed + i, sites[name].rotary_dim)
                  for i, name in enumerate(site_names)}
    outliers = OutlierFilter(outlier_eta)
    hooks = [site.register_forward_hook(lambda m, args, out: outliers.observe(args[0]))
             for name, site in sites.items() if site_type(name) == "down_in"] if outlier_eta is not None else []
    maps = {name: MapSampler(reservoir, outliers) for name, reservoir in reservoirs.items()
            if site_type(name) == "softmax"}
    hooks += [sites[name].register_forward_hook(
        lambda m, args, out, r=reservoir: r.add(args[0], recorded_rows(args[0], outliers.keep)))
        for name, reservoir in reservoirs.items() if name not in maps]
    device = next(model.parameters()).device
    for name, sampler in maps.items():
        sites[name].map_recorder = sampler
    try:
        with runtime_of(model).use(mode="analog", meter=None):
            batches = list(windows.split(batch_size))
            with progress_bar("calibrating", len(batches), show_progress) as advance:
                for batch in batches:
                    batch = batch.to(device)
                    outliers.start_batch(batch)
                    record_batch(model, batch)
                    advance()
    finally:
        for hook in hooks:
            hook.remove()
        for name in maps:
            sites[name].map_recorder = None
    return Recording(reservoirs, outliers.left_out if outlier_eta is not None else None)
