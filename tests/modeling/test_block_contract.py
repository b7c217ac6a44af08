"""The block contract (tests/block_contract.py) for every block of every registry: shapes, padding and batch-order
invariance, gradients, save/load and a remote-code reload, each registered block in the tiny models its stage needs.

The cases are read from the registries when this module is collected, so registering a block (in the package or in a
module imported before collection) adds its cases here with no new test code; the last tests register blocks from
outside at run time and show the same checks pick them up, and catch a block that breaks the contract.
"""

import pytest
import torch
from block_contract import (
    BlockContractMixin,
    BlockContractTester,
    RemoteCodeContractMixin,
    RemoteRun,
    contexts,
    contract_cases,
    in_bundle,
    needs_fitting,
    no_fsync,
    pair_architecture,
    remote_cases,
    single_architecture,
)
from torch import nn

from hf_metaembed.modeling.fusion import FUSIONS, Fusion
from hf_metaembed.modeling.pairing import PAIRINGS
from hf_metaembed.modeling.pooling import POOLERS, Pooler
from hf_metaembed.modeling.registry import REGISTRIES

CASES = contract_cases()
REMOTE_CASES = remote_cases(CASES)


@pytest.fixture(scope="module")
def contract(tmp_path_factory) -> BlockContractTester:
    return BlockContractTester(tmp_path_factory.mktemp("contract_backbones"))


@pytest.fixture(scope="module")
def remote_run(contract, tmp_path_factory) -> RemoteRun:
    return RemoteRun(contract, CASES, REMOTE_CASES, tmp_path_factory.mktemp("contract_saved"))


# the remote interpreter starts before the first local check, and runs while they do
@pytest.mark.usefixtures("remote_run")
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
class TestBlockContract(BlockContractMixin):
    """Every registered block in every context, every local check."""


@pytest.mark.parametrize("case", REMOTE_CASES, ids=[case.id for case in REMOTE_CASES])
class TestRemoteCode(RemoteCodeContractMixin):
    """Every registered block reloaded as remote code (one interpreter for all)."""


def test_every_registered_block_has_its_cases():
    listed = {(case.kind, case.name) for case in CASES}
    for registry in REGISTRIES:
        for name in registry:
            assert (registry.kind, name) in listed, f"{registry.kind} {name!r} has no contract case"
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), "two cases share an id"
    for case in CASES:
        assert case.config[case.config_field] == case.name
    fusion_cases = {case.config["architecture"] for case in CASES if case.kind == "fusion"}
    assert fusion_cases == {single_architecture(), pair_architecture()}
    assert {c.config["architecture"] for c in CASES if c.kind == "unit encoder" and c.name == "none"} == set(PAIRINGS)
    assert {case.task for case in CASES if case.kind == "head"} == {"regression", "classification"}
    assert len(REMOTE_CASES) == sum(len(registry) for registry in REGISTRIES)


# ------------------------------------------------------------------------------------ blocks registered from outside


class ScaledMaxFusion(Fusion):
    """Projects every backbone and keeps the largest value of each feature, times `contractmax_scale`."""

    config_fields = {"contractmax_scale": 1.0}
    contract_settings = {"contractmax_scale": 2.0}  # what its contract case is built with

    def __init__(self, config, input_dims):
        super().__init__(config, input_dims)
        self.scale = config.contractmax_scale
        self.projections = nn.ModuleList(nn.Linear(d, self.dim) for d in input_dims)

    def fuse(self, states, unit_mask):
        projected = torch.stack([proj(h) for proj, h in zip(self.projections, states)], dim=2)  # (b, u, n, d)
        fused, winner = projected.max(dim=2)
        return self.scale * fused, nn.functional.one_hot(winner, len(states)).to(fused.dtype).mean(dim=2)


class RootMeanSquarePooler(Pooler):
    """sqrt(mean over the real positions of h**2), feature by feature."""

    def forward(self, states, mask):
        weights = mask.to(states.dtype) / mask.sum(dim=1, keepdim=True).clamp(min=1)
        return torch.einsum("bl,bld->bd", weights, states**2 + 1e-6).sqrt(), weights


class LeakyMeanPooler(Pooler):
    """Breaks the contract on purpose: averages every position, padding included."""

    def forward(self, states, mask):
        return states.mean(dim=1), None


class UnfittableFusion(ScaledMaxFusion):
    """Says it must be fitted, and offers no way to fit it."""

    needs_fitting = True


@pytest.fixture
def outside_blocks():
    """Register blocks the way a user's own module would; pop them again afterwards."""
    added = [
        (FUSIONS, "contract_max", ScaledMaxFusion),
        (POOLERS, "contract_rms", RootMeanSquarePooler),
        (POOLERS, "contract_leaky", LeakyMeanPooler),
        (FUSIONS, "contract_unfittable", UnfittableFusion),
    ]
    for registry, name, block in added:
        registry.register(name)(block)
    yield {name: block for _, name, block in added}
    for registry, name, _ in added:
        registry.pop(name)
    assert not {"contract_max", "contract_unfittable"} & set(FUSIONS)


def outside_cases(name: str) -> list:
    cases = [case for case in contract_cases() if case.name == name]
    assert [case.config["architecture"] for case in cases] == [
        c["architecture"] for c in contexts(cases[0].config_field)
    ]
    return cases


def test_blocks_registered_from_outside_get_the_same_checks(outside_blocks, contract, tmp_path):
    for name in ("contract_max", "contract_rms"):
        for case in outside_cases(name):
            assert case.block is outside_blocks[name] and not in_bundle(case.block) and case.refusal is None
            model = contract.build(case)
            if name == "contract_max":  # the block's contract_settings reached its model
                assert model.config.contractmax_scale == 2.0 and model.metaembed.fusion.scale == 2.0
            contract.check_shapes(case)
            contract.check_padding_invariance(case)
            contract.check_batch_order_invariance(case)
            contract.check_gradients(case)
            folder = tmp_path / case.id
            with no_fsync():
                model.save_pretrained(folder)
            contract.check_save_load(case, str(folder))
            # where the user's module is not imported, the saved folder names the block instead of loading wrongly
            missing = {"error": f"ValueError: unknown {case.kind} {case.name!r} (config field `{case.config_field}`)"}
            contract.check_remote_code(case, missing)
            with pytest.raises(AssertionError, match="outside the bundle"):
                contract.check_remote_code(case, {"module": "transformers_modules.x", "logits": None})


def test_a_block_that_breaks_the_contract_fails_it(outside_blocks, contract):
    single = outside_cases("contract_leaky")[0]
    assert single.config["architecture"] == single_architecture()
    contract.check_shapes(single)  # its shapes are right...
    with pytest.raises(AssertionError, match="extra padded units"):  # ...but padding leaks into its output
        contract.check_padding_invariance(single)


def test_a_block_that_must_be_fitted_without_a_way_to_fit_it_is_skipped_with_the_reason(outside_blocks, contract):
    case = outside_cases("contract_unfittable")[0]
    assert needs_fitting(case.block) and not needs_fitting(ScaledMaxFusion)
    with pytest.raises(pytest.skip.Exception, match="fusion 'contract_unfittable' must be fitted .* no fit"):
        contract.build(case)
