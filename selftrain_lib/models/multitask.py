"""f plus an auxiliary branch g that shares f's first blocks: the paper's ĝ (Stage 2) and g̃ (Stage 3).

f's blocks are ``[conv1, conv2, conv3, conv4, conv5, aspp]``. A branch "with its last k blocks
private" shares the first ``6 - k`` blocks with f (the same module objects, hence the same
weights) and owns the rest:

* ``k = 2`` (ĝ): shares ``conv1`` .. ``conv4``; owns ``conv6`` (``conv5``'s structure at
  ``width_factor`` of its channels, see :meth:`ResNetBackbone.make_stage5`) and its own ASPP.
* ``k = 1`` (g̃): shares ``conv1`` .. ``conv5``; owns its own ASPP.

The branch registers only its private modules, so ``branch.parameters()`` are exactly the
private parameters and ``model.state_dict()`` holds every tensor once (``segmenter.*`` and
``branch.conv6.*`` / ``branch.aspp.*``). The shared stages are reachable as ``branch.conv1`` etc.
``copy.deepcopy`` and pickling keep the sharing.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .backbones import STAGES
from .deeplabv2 import ASPP, DeepLabV2, upsample_logits

__all__ = ["BLOCKS", "AuxiliaryBranch", "MultiTaskDeepLab"]

#: f's blocks, input to output; a branch owns the last k of them.
BLOCKS: tuple[str, ...] = STAGES + ("aspp",)


#: how the branch's conv6 is initialised: ``make_stage5``'s (Kaiming, as torchvision's ResNets) or
#: N(0, 0.01) for every convolution, as the authors' code (their branch's ``normal_(0, 0.01)``)
CONV6_INITS = ("kaiming", "normal-0.01")


def _init_conv6(conv6: nn.Module, how: str) -> None:
    if how not in CONV6_INITS:
        raise ValueError(f"conv6_init must be one of {list(CONV6_INITS)}, got {how!r}")
    if how == "normal-0.01":
        for m in conv6.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)


class AuxiliaryBranch(nn.Module):
    """The auxiliary network g: f's first ``6 - private_blocks`` blocks (shared) + private blocks.

    ``forward(x: (B, 3, H, W)) -> logits (B, C, H, W)`` runs the shared trunk and the private
    blocks (use :meth:`MultiTaskDeepLab.forward` to run f and g on one shared trunk pass);
    ``head(features, size)`` runs only the private blocks on the output of :attr:`split_at`.

    Attributes:
        private_blocks: k (1 or 2).
        shared_stages: names of f's stages this branch uses (``conv1`` .. ``conv4`` or ``conv5``),
            readable as attributes (``branch.conv1 is segmenter.backbone.conv1``) but not registered.
        split_at: the last shared stage, whose output :meth:`head` takes.
        conv6: the private ``conv5``-like stage (``k = 2``), else ``None``.
        aspp: the private ASPP.
    """

    def __init__(self, segmenter: DeepLabV2, private_blocks: int, width_factor: float = 0.5,
                 conv6_init: str = "kaiming") -> None:
        super().__init__()
        if private_blocks not in (1, 2):
            raise ValueError(f"private_blocks must be 1 (g~: private ASPP) or 2 (g^: private conv6 + ASPP), "
                             f"got {private_blocks!r}")
        backbone = segmenter.backbone
        self.private_blocks = int(private_blocks)
        self.width_factor = float(width_factor)
        self.shared_stages = STAGES[:len(BLOCKS) - self.private_blocks]
        self.split_at = self.shared_stages[-1]
        # A plain (unregistered) reference: the shared stages belong to f, not to the branch.
        object.__setattr__(self, "_trunk", backbone)
        if self.private_blocks == 2:
            self.conv6 = backbone.make_stage5(width_factor)
            _init_conv6(self.conv6, conv6_init)
            channels = self.conv6.out_channels
        else:
            self.conv6 = None
            channels = backbone.out_channels
        self.aspp = ASPP(channels, segmenter.num_classes, segmenter.aspp.dilations)
        self.align_corners = getattr(segmenter, "align_corners", False)

    def __getattr__(self, name: str):
        shared = self.__dict__.get("shared_stages", ())
        if name in shared:
            return getattr(self.__dict__["_trunk"], name)
        return super().__getattr__(name)

    def head(self, features: Tensor, size: Sequence[int]) -> Tensor:
        """Output of :attr:`split_at` ``(B, ch, h, w)`` -> logits ``(B, C, *size)``."""
        if self.conv6 is not None:
            features = self.conv6(features)
        return upsample_logits(self.aspp(features), size, self.align_corners)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self._trunk.features(x, self.split_at), x.shape[-2:])

    def extra_repr(self) -> str:
        return (f"private_blocks={self.private_blocks}, shares {self.shared_stages[0]}..{self.split_at} with f"
                + (f", width_factor={self.width_factor}" if self.conv6 is not None else ""))


class MultiTaskDeepLab(nn.Module):
    """f (a :class:`DeepLabV2`) plus an optional auxiliary branch g sharing f's first blocks.

    ``private_blocks``: 2 -> ĝ (Stage 2), 1 -> g̃ (Stage 3), 0 or ``None`` -> no branch.

    ``forward(x: (B, 3, H, W)) -> {"f": (B, C, H, W), "g": (B, C, H, W)}`` (``"g"`` only when a
    branch exists and ``branch=True``). The shared trunk runs once per forward, so batch-norm
    statistics of the shared stages see each image once.

    Attributes:
        segmenter: f, the test-time network; exactly a :class:`DeepLabV2` with no branch parameters.
        branch: the :class:`AuxiliaryBranch` (its parameters are the private ones), or ``None``.
    """

    def __init__(self, segmenter: DeepLabV2, private_blocks: int | None, width_factor: float = 0.5,
                 conv6_init: str = "kaiming") -> None:
        super().__init__()
        if not isinstance(segmenter, DeepLabV2):
            raise TypeError(f"segmenter must be a DeepLabV2, got {type(segmenter).__name__}")
        self.segmenter = segmenter
        self.private_blocks = int(private_blocks or 0)
        self.branch = AuxiliaryBranch(segmenter, self.private_blocks, width_factor, conv6_init) if self.private_blocks else None

    def forward(self, x: Tensor, branch: bool = True) -> dict[str, Tensor]:
        size = x.shape[-2:]
        if self.branch is None or not branch:
            return {"f": self.segmenter(x)}
        trunk = self.segmenter.backbone
        split = self.branch.split_at
        shared = trunk.features(x, split)
        f_features = shared if split == "conv5" else trunk.run(shared, "conv5", "conv5")
        return {"f": self.segmenter.decode(f_features, size), "g": self.branch.head(shared, size)}
