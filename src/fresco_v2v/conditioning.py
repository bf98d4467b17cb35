"""The prompt conditioning a UNet (and its ControlNets) take per batch item, whatever the model family.

SD1.x takes the text encoder's states through cross-attention only. SDXL also takes ``added_cond_kwargs``: a pooled
text embedding and six "time ids" per item (original size, crop corner, target size; :mod:`fresco_v2v.sdxl`). The
pipeline keeps both together so that the classifier-free-guidance batch [negative; positive] and the reference
pass's halves are cut and joined the same way for every part.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TextConditioning:
    """Conditioning of B batch items: ``states`` [B, T, C] for cross-attention and, for SDXL, ``added``:
    ``text_embeds`` [B, P] and ``time_ids`` [B, 6]. ``added`` is None for models without added conditions."""

    states: torch.Tensor
    added: dict[str, torch.Tensor] | None = None

    @property
    def batch(self) -> int:
        return int(self.states.shape[0])

    def last(self, n: int) -> TextConditioning:
        """The last ``n`` items (the positive half of a guidance batch)."""
        added = None if self.added is None else {k: v[-n:] for k, v in self.added.items()}
        return TextConditioning(self.states[-n:], added)

    def then(self, other: TextConditioning) -> TextConditioning:
        """This batch followed by ``other``'s items (the guidance batch [negative; positive])."""
        if (self.added is None) != (other.added is None):
            raise ValueError("cannot join conditioning with and without added conditions")
        added = None if self.added is None else {k: torch.cat([v, other.added[k]]) for k, v in self.added.items()}
        return TextConditioning(torch.cat([self.states, other.states]), added)

    def model_kwargs(self, image_embeds: list[torch.Tensor] | None = None) -> dict:
        """The keyword arguments of ``UNet2DConditionModel`` and ``ControlNetModel`` for this conditioning (the
        same call as before for SD1.x: no ``added_cond_kwargs``); ``image_embeds``: an IP-Adapter's, for the UNet
        (diffusers takes them among the added conditions)."""
        kwargs = {"encoder_hidden_states": self.states}
        added = dict(self.added or {})
        if image_embeds is not None:
            added["image_embeds"] = image_embeds
        if added:
            kwargs["added_cond_kwargs"] = added
        return kwargs


def as_conditioning(emb: torch.Tensor | TextConditioning) -> TextConditioning:
    """A bare [B, T, C] tensor of text states (SD1.x) as a :class:`TextConditioning`; one is returned as is."""
    return emb if isinstance(emb, TextConditioning) else TextConditioning(emb)
