"""Special tokens as units, for `pool_special_tokens=True` at `level="unit"`.

The study's reference pools every token its attention mask keeps: each chain's special tokens ([CLS]/<cls> before,
<eos>/</s> after) and the separators between joined chains, besides the residues. Units are what several backbones
share, so special tokens become units at canonical places: one before the first residue, one at each boundary
between chains, one after the last residue. Every backbone's special tokens at a place are averaged into that unit
(a backbone with none there, e.g. a T5 encoder before the first residue, contributes zeros), so the backbones still
align one-to-one and the units stay in sequence order for ConvBERT and for joining sides.

Model code (copied next to a saved model for `trust_remote_code`): imports torch only.
"""

import torch


def with_special_units(
    token_unit_index: torch.Tensor, attention_mask: torch.Tensor, unit_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-index tokens so that special tokens map to units of their own, inserted in sequence order.

    Args:
        token_unit_index: `(segments, backbones, tokens)` unit of each token, -1 for special tokens and padding.
        attention_mask: `(segments, backbones, tokens)` 1 for real (residue or special) tokens.
        unit_mask: `(segments, units)` 1 for real units (residues or words), packed from the left.

    Returns:
        The new `token_unit_index` (same shape) and `unit_mask (segments, units + places)`.
    """
    segments, backbones, tokens = token_unit_index.shape
    lengths = unit_mask.sum(dim=1).long()  # (segments,)
    real = attention_mask.bool()
    special = real & (token_unit_index == -1)  # a prompt's tokens (-2) never become units
    # the place of a special token: how many units precede it (0: before the first, `length`: after the last)
    place = (torch.cummax(token_unit_index, dim=-1).values + 1).clamp(
        min=0
    )  # -1 (or a prompt's -2) before any unit: 0
    place = torch.minimum(place, lengths.view(segments, 1, 1))
    places = unit_mask.shape[1] + 1
    occupied = torch.zeros(segments, places, dtype=torch.long, device=token_unit_index.device)
    flat_place = torch.where(special, place, places).reshape(segments, -1)
    occupied = occupied.scatter_add(1, flat_place.clamp(max=places - 1), special.reshape(segments, -1).long()).clamp(
        max=1
    )  # (segments, places): 1 where any backbone has a special token
    before_or_at = occupied.cumsum(dim=1)  # special units whose place is <= p
    # a residue unit u moves right by the special units placed at or before it; a special unit at place p sits
    # after the p residues and the special units placed before p
    unit_shift = before_or_at[:, :-1].gather(1, token_unit_index.clamp(min=0).reshape(segments, -1))
    moved = token_unit_index + unit_shift.view(segments, backbones, tokens)
    special_index = place + before_or_at.gather(1, place.reshape(segments, -1)).view(place.shape) - 1
    new_index = torch.where(token_unit_index >= 0, moved, torch.where(special, special_index, -1))
    total = lengths + occupied.sum(dim=1)
    width = max(int(total.max()), 1) if segments else 1
    new_mask = (torch.arange(width, device=unit_mask.device) < total.unsqueeze(1)).to(unit_mask.dtype)
    return new_index, new_mask
