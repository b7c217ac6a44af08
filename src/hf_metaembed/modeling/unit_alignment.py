"""Token-to-unit alignment: the sub-word tokens of one backbone pooled onto the units (residues, words) they belong
to, by index arithmetic over the processor's `token_unit_index` (no loop over segments or units).

Used by the reading stage (reading.py, which re-exports it). Model code (copied next to a saved model for
`trust_remote_code`): imports torch only.
"""

import torch


def align_to_units(
    token_states: torch.Tensor, token_unit_index: torch.Tensor, num_units: int, mode: str = "mean"
) -> torch.Tensor:
    """Pool token states onto units.

    Args:
        token_states: `(segments, tokens, *feature)` states of one backbone.
        token_unit_index: `(segments, tokens)` unit of each token, -1 for special tokens and padding.
        num_units: number of unit slots in the output.
        mode: `"mean"` of a unit's tokens, or its `"first"` token.

    Returns:
        `(segments, num_units, *feature)`; a unit with no token is zero.
    """
    segments, tokens = token_unit_index.shape
    feature_shape = token_states.shape[2:]
    # route special tokens and padding to an extra slot that is dropped at the end
    slots = torch.where(token_unit_index < 0, num_units, token_unit_index)
    if mode == "first":
        positions = torch.arange(tokens, device=slots.device).expand(segments, tokens)
        first = torch.full((segments, num_units + 1), tokens, device=slots.device, dtype=torch.long)
        first = first.scatter_reduce(1, slots, positions, reduce="amin")[:, :num_units]
        covered = first < tokens
        gather_index = first.clamp(max=tokens - 1)
        gather_index = gather_index.view(segments, num_units, *([1] * len(feature_shape))).expand(
            segments, num_units, *feature_shape
        )
        picked = token_states.gather(1, gather_index)
        return picked * covered.view(segments, num_units, *([1] * len(feature_shape))).to(picked.dtype)
    flat = token_states.reshape(segments, tokens, -1)
    sums = flat.new_zeros(segments, num_units + 1, flat.shape[-1])
    sums.scatter_add_(1, slots.unsqueeze(-1).expand_as(flat), flat)
    counts = flat.new_zeros(segments, num_units + 1)
    counts.scatter_add_(1, slots, torch.ones_like(slots, dtype=flat.dtype))
    means = sums[:, :num_units] / counts[:, :num_units].clamp(min=1).unsqueeze(-1)
    return means.reshape(segments, num_units, *feature_shape)


__all__ = ["align_to_units"]
