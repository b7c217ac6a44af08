"""Unit encoders: the stage that refines fused unit states (residues or words) before the pair architecture pools
them, e.g. one ConvBERT layer over frozen protein features.

Every unit encoder maps `unit_states (segments, units, dim)` and `unit_mask (segments, units)` to refined states of
the same shape, with padded units zero. Where it runs is declared by the pair architecture (`Pairing.encoder_scope`)
and done here: per segment (a chain for `hp`, a side for `pad`, the joined complex for `sc`) or over the two sides
joined (`ec`), read back onto the segments afterwards.

With `shared_unit_encoder=False` (the reference's `shared_convbert: false`) the ligand's segments and the receptor's
each go through their own copy of the encoder: the stage itself serves the ligand (its weights keep the keys of a
shared encoder) and `receptor_encoder` the receptor.

Adding one: a `UnitEncoder` subclass decorated with `@UNIT_ENCODERS.register("name")`, taking `(config, dim)` and
defining `refine(unit_states, unit_mask)` over one padded batch of sequences.
"""

import torch
from torch import nn

from .fusion import unit_size
from .pairing import PAIRINGS
from .registry import Block, check_heads, new_registry
from .segments import check_segments, join_sides

UNIT_ENCODERS = new_registry("unit encoder", "unit_encoder")


def list_unit_encoders() -> list[str]:
    """Names accepted by `MetaEmbedConfig(unit_encoder=...)`."""
    return UNIT_ENCODERS.names()


class UnitEncoder(Block, nn.Module):
    """Base class: the stage `forward(unit_states, unit_mask, segment_sample_index, segment_side_index) ->
    unit_states`, running the subclass's `refine(unit_states (sequences, units, dim), unit_mask) -> refined states`
    (padded units zero) where the architecture's `encoder_scope` says."""

    # an encoder that returns its input unchanged (no joining of sides is then needed)
    is_identity = False
    config_fields = {"shared_unit_encoder": True}
    config_aliases = {"shared_convbert": "shared_unit_encoder"}

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        if cls.is_identity or getattr(config, "shared_unit_encoder", True):
            return
        pairing = PAIRINGS.get_class(config.architecture)
        reads = {"single": "single sequences, which have no sides", "joined": "each complex joined into one input"}
        if pairing.encoder_scope(config) != "segments":
            reads[pairing.layout] = "the two sides joined into one sequence"
        if pairing.layout in reads:
            raise ValueError(
                f"shared_unit_encoder=False gives the ligand and the receptor their own unit encoder, but "
                f"architecture {config.architecture!r} runs the unit encoder over {reads[pairing.layout]}; use an "
                "architecture that encodes each side's segments alone (hp, pad, perceiver, or ec with "
                "ec_encode_joined=False), or keep shared_unit_encoder=True"
            )

    def __init__(self, config, dim: int) -> None:
        super().__init__()
        self.dim = dim
        # built outside a model (no architecture named), it reads every sequence alone
        self.architecture = getattr(config, "architecture", "single")
        self.scope = PAIRINGS.get_class(self.architecture).encoder_scope(config)

    def forward(
        self,
        unit_states: torch.Tensor,
        unit_mask: torch.Tensor,
        segment_sample_index: torch.Tensor | None = None,
        segment_side_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`(segments, units, dim)` fused unit states -> refined ones, of the same shape."""
        if self.is_identity:
            return unit_states
        if self.scope == "segments":
            if hasattr(self, "receptor_encoder"):
                return self.refine_by_side(unit_states, unit_mask, segment_side_index)
            return self.refine(unit_states, unit_mask)
        samples, group = check_segments(
            unit_mask, segment_sample_index, segment_side_index, "sides", self.architecture
        )
        joined, joined_mask, slots = join_sides(unit_states, unit_mask, group, samples)
        joined = self.refine(joined, joined_mask)
        # the refined states of each segment, read back from the joined rows
        refined = unit_states.new_zeros(unit_states.shape[:-1] + joined.shape[-1:])
        refined[slots[0], slots[1]] = joined[slots[2], slots[3]]
        return refined

    def refine_by_side(
        self, unit_states: torch.Tensor, unit_mask: torch.Tensor, segment_side_index: torch.Tensor | None
    ) -> torch.Tensor:
        """Ligand segments (side 0) refined by this encoder, receptor segments (side 1) by `receptor_encoder`."""
        if segment_side_index is None:
            raise ValueError(
                "this model has separate ligand and receptor unit encoders (shared_unit_encoder=False) and needs "
                "segment_side_index (segments,) to tell them apart; pass the processor's batch of complexes"
            )
        receptor = segment_side_index.to(unit_states.device) == 1  # (segments,)
        refined = None
        for rows, encoder in ((~receptor, self), (receptor, self.receptor_encoder)):
            if not bool(rows.any()):
                continue
            states = encoder.refine(unit_states[rows], unit_mask[rows])
            if refined is None:
                refined = unit_states.new_zeros(unit_states.shape[:-1] + states.shape[-1:])
            refined[rows] = states
        return refined if refined is not None else unit_states


@UNIT_ENCODERS.register("none")
class NoUnitEncoder(UnitEncoder):
    """Fused unit states go to the pair architecture unchanged."""

    is_identity = True
    config_fields = {}  # nothing to share or separate

    def refine(self, unit_states: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
        return unit_states


@UNIT_ENCODERS.register("convbert")
class ConvBertUnitEncoder(UnitEncoder):
    """One ConvBERT layer (Jiang et al., 2020) over unit states, with padding masked everywhere.

    Half of the `convbert_num_heads` heads are self-attention heads, the other half span-based dynamic convolution
    heads: at each unit a kernel of `convbert_kernel_size` weights is computed from the query and a depthwise-separable
    convolution of the input, softmax-normalised, and applied to the window of values around the unit. The two halves
    are concatenated (back to `dim`), then output projection, residual and LayerNorm, a GELU feed-forward of
    intermediate size `dim // 2`, residual and LayerNorm.

    Padding never reaches a real unit: padded keys are masked in the attention, and the input of the convolution and
    the values its windows read are zeroed at padded units (so a unit near the end of a chain sees zeros, exactly as
    at the edge of an unpadded sequence). Padded units come out as zeros.

    `refine(unit_states (segments, units, dim), unit_mask (segments, units)) -> (segments, units, dim)`. Segments
    never interact, so `refine` runs them in groups of similar length, each group cut to its own longest segment:
    the attention's cost, quadratic in length, is not spent on padding (chains of 50-300 residues in one batch); a
    traced graph (the ONNX export) encodes the whole padded batch at once instead.
    """

    # a segment joins the current group while its length is at least this share of the group's longest; groups whose
    # longest segment has at most `group_min_length` units take every shorter segment (padding is cheap there, and
    # every extra group costs a few kernel launches)
    group_length_ratio = 0.75
    group_min_length = 64

    config_fields = {
        **UnitEncoder.config_fields,
        "convbert_num_heads": 8,
        "convbert_kernel_size": 7,
        "convbert_dropout": 0.2,
        "convbert_attention_dropout": 0.1,
        "convbert_layer_norm_eps": 1e-12,
    }
    # release 0.1 used PyTorch's LayerNorm default; the reference (transformers' ConvBERT) uses 1e-12
    legacy_config = {"convbert_layer_norm_eps": 1e-5}
    card_text = (
        "One ConvBERT layer (Jiang et al., 2020; half self-attention heads, half span-based dynamic convolution "
        "heads) refines the fused unit states before pooling, with padding masked before its convolution."
    )

    @classmethod
    def check_config(cls, config, dims: list[int]) -> None:
        super().check_config(config, dims)
        check_heads("convbert_num_heads", config.convbert_num_heads, unit_size(config, dims), "unit size", even=True)
        kernel = config.convbert_kernel_size
        if not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
            raise ValueError(
                f"convbert_kernel_size must be a positive odd number (a span centred on a unit), got {kernel}"
            )

    def __init__(self, config, dim: int) -> None:
        super().__init__(config, dim)
        heads, kernel = config.convbert_num_heads, config.convbert_kernel_size
        self.head_size = dim // heads
        self.mixed_heads = heads // 2  # heads of each kind
        self.kernel_size = kernel
        half = self.mixed_heads * self.head_size  # dim // 2
        self.query = nn.Linear(dim, half)
        self.key = nn.Linear(dim, half)
        self.value = nn.Linear(dim, half)
        # depthwise-separable convolution of the input that, times the query, predicts each unit's kernel
        self.key_depthwise = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim, bias=False)
        self.key_pointwise = nn.Conv1d(dim, half, 1)
        self.conv_kernel = nn.Linear(half, self.mixed_heads * kernel)
        self.conv_value = nn.Linear(dim, half)
        self.attention_dropout = nn.Dropout(config.convbert_attention_dropout)
        self.attention_output = nn.Linear(dim, dim)
        self.attention_norm = nn.LayerNorm(dim, eps=config.convbert_layer_norm_eps)
        intermediate = max(dim // 2, 1)
        self.intermediate = nn.Linear(dim, intermediate)
        self.activation = nn.GELU()
        self.output = nn.Linear(intermediate, dim)
        self.output_norm = nn.LayerNorm(dim, eps=config.convbert_layer_norm_eps)
        self.dropout = nn.Dropout(config.convbert_dropout)

    def _split(self, states: torch.Tensor) -> torch.Tensor:
        # (segments, units, heads * head_size) -> (segments, heads, units, head_size)
        segments, units, _ = states.shape
        return states.view(segments, units, self.mixed_heads, self.head_size).transpose(1, 2)

    def refine(self, unit_states: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():  # a traced graph (ONNX) cannot group by lengths read from the data: the whole
            return self.encode(unit_states, unit_mask)  # padded batch at once gives the same states (padding masked)
        segments, units, _ = unit_states.shape
        positions = torch.arange(1, units + 1, device=unit_mask.device)
        lengths = (unit_mask.bool() * positions).amax(dim=1).tolist() if units else [0] * segments  # last real + 1
        groups = length_groups(lengths, self.group_length_ratio, self.group_min_length)
        if len(groups) == 1:
            length = max(max(lengths, default=0), 1)
            encoded = self.encode(unit_states[:, :length], unit_mask[:, :length])
            return nn.functional.pad(encoded, (0, 0, 0, units - length))
        order, pieces = [], []
        for rows in groups:
            length = max(lengths[rows[0]], 1)  # rows[0] is the group's longest
            index = torch.tensor(rows, device=unit_states.device)
            encoded = self.encode(unit_states[index, :length], unit_mask[index, :length])
            pieces.append(nn.functional.pad(encoded, (0, 0, 0, units - length)))
            order += rows
        inverse = torch.empty(segments, dtype=torch.long, device=unit_states.device)
        inverse[torch.tensor(order, device=unit_states.device)] = torch.arange(segments, device=unit_states.device)
        return torch.cat(pieces).index_select(0, inverse)

    def encode(self, unit_states: torch.Tensor, unit_mask: torch.Tensor) -> torch.Tensor:
        """The ConvBERT layer over one padded batch of segments (no grouping)."""
        real = unit_mask.bool()
        keep = real.unsqueeze(-1).to(unit_states.dtype)
        states = unit_states * keep
        segments, units, _ = states.shape
        query = self.query(states)  # (segments, units, dim // 2)

        # self-attention heads; padded keys get a large negative (finite, so an all-padding row cannot give NaN) score
        key_bias = torch.zeros(segments, 1, 1, units, dtype=states.dtype, device=states.device)
        key_bias = key_bias.masked_fill(~real[:, None, None, :], torch.finfo(states.dtype).min)
        attended = nn.functional.scaled_dot_product_attention(
            self._split(query),
            self._split(self.key(states)),
            self._split(self.value(states)),
            attn_mask=key_bias,
            dropout_p=self.attention_dropout.p if self.training else 0.0,
        )
        attended = attended.transpose(1, 2).reshape(segments, units, -1)

        # span-based dynamic convolution heads; `states` is zero at padding, so is the convolution's input
        key_conv = self.key_pointwise(self.key_depthwise(states.transpose(1, 2))).transpose(1, 2)
        kernels = self.conv_kernel(key_conv * query).view(segments, units, self.mixed_heads, self.kernel_size)
        kernels = torch.softmax(kernels, dim=-1)
        values = self.conv_value(states) * keep  # zeroed again: the linear's bias would otherwise fill padding
        reach = self.kernel_size // 2
        windows = nn.functional.pad(values.transpose(1, 2), (reach, reach)).unfold(2, self.kernel_size, 1)
        # (segments, dim // 2, units, kernel) -> (segments, units, heads, head_size, kernel)
        windows = windows.permute(0, 2, 1, 3).reshape(segments, units, self.mixed_heads, self.head_size, -1)
        convolved = torch.einsum("suhk,suhdk->suhd", kernels, windows).reshape(segments, units, -1)

        mixed = torch.cat([attended, convolved], dim=-1)  # (segments, units, dim)
        states = self.attention_norm(states + self.dropout(self.attention_output(mixed)))
        feed_forward = self.output(self.activation(self.intermediate(states)))
        states = self.output_norm(states + self.dropout(feed_forward))
        return states * keep


def length_groups(lengths: list[int], ratio: float, min_length: int = 0) -> list[list[int]]:
    """Segment indices grouped by length, longest first: a group takes segments while they are at least `ratio`
    times as long as its first (longest) one, so no segment of a group is padded by more than `1 - ratio`; a group
    whose longest segment has at most `min_length` units takes every shorter segment."""
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        longest = lengths[groups[-1][0]] if groups else 0
        if groups and (lengths[index] >= ratio * longest or longest <= min_length):
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def build_unit_encoder(config, dim: int) -> UnitEncoder:
    """Instantiate the unit encoder named by `config.unit_encoder` over unit states of size `dim`; with
    `shared_unit_encoder=False`, with a second one of its own for the receptor (`receptor_encoder`)."""
    encoder_class = UNIT_ENCODERS.get_class(config.unit_encoder)
    encoder = encoder_class(config, dim)
    if not getattr(config, "shared_unit_encoder", True) and not encoder.is_identity:
        encoder.receptor_encoder = encoder_class(config, dim)
    return encoder
