"""Where FRESCO acts in a UNet's decoder, read from the UNet itself (paper §3.2: "the decoder layer within the U-Net").

FRESCO's attention (§3.4) replaces decoder self-attention layers, and its feature optimization (§3.3) changes the
input features of decoder blocks; the correspondence is built at the factor of each of those inputs. None of this
is written per model family: it follows from the modules the UNet has.

* SD1.5 (4 levels): ``up_blocks`` 0..3 take features at 1/64, 1/32, 1/16, 1/8 of the frame; self-attention sits in
  up_blocks 1..3. The authors guide up_blocks 2 and 3 and optimize all four blocks' inputs.
* SDXL (3 levels): ``up_blocks`` 0..2 take features at 1/32, 1/16, 1/8; self-attention sits in up_blocks 0 and 1 only
  (1/32 and 1/16; 30 and 6 transformer layers). The same rule, the two finest decoder levels with self-attention,
  gives up_blocks 0 and 1; all three blocks' inputs are optimized.
"""

from __future__ import annotations

from dataclasses import dataclass

#: How many of the finest decoder levels with self-attention FRESCO guides by default: two, as the authors' code
#: guides up_blocks.2 and .3 of SD1.5, its two finest levels with attention (1/16 and 1/8).
GUIDED_LEVELS = 2


@dataclass(frozen=True)
class DecoderBlock:
    """One ``unet.up_blocks[index]``: the pixel-to-token factor of its input and its self-attention processors."""

    index: int
    factor: int  # pixels per token side of the features it takes (and attends over)
    self_attention: tuple[str, ...]  # names in ``unet.attn_processors`` ending in "attn1.processor"

    @property
    def prefix(self) -> str:
        return f"up_blocks.{self.index}"


def decoder_blocks(unet, vae_scale_factor: int) -> tuple[DecoderBlock, ...]:
    """The UNet's decoder blocks in order (coarsest first), each with its input factor and self-attention layers.

    The factor of block i is the latent factor times 2 for every upsampler in blocks i.. (the features are upsampled
    at the end of a block): SD1.5 (64, 32, 16, 8), SDXL (32, 16, 8) with the VAE's 8.
    """
    ups = list(unet.up_blocks)
    names = [n for n in unet.attn_processors if n.endswith("attn1.processor")]
    out = []
    for i, _ in enumerate(ups):
        later = sum(1 for b in ups[i:] if getattr(b, "upsamplers", None))
        prefix = f"up_blocks.{i}."
        out.append(DecoderBlock(i, vae_scale_factor * 2**later, tuple(n for n in names if n.startswith(prefix))))
    return tuple(out)


def default_guided_prefixes(unet) -> tuple[str, ...]:
    """The decoder blocks FRESCO-guided attention replaces by default: the ``GUIDED_LEVELS`` finest with
    self-attention (SD1.5: up_blocks.2, .3, as the authors; SDXL: up_blocks.0, .1)."""
    with_attention = [b for b in decoder_blocks(unet, 1) if b.self_attention]
    if not with_attention:
        raise ValueError("the UNet's decoder has no self-attention layer for FRESCO-guided attention")
    return tuple(b.prefix for b in with_attention[-GUIDED_LEVELS:])


def default_optimized_blocks(unet) -> tuple[int, ...]:
    """The decoder blocks whose input features are optimized by default: every one (§3.3: "each decoder layer"; the
    authors' code: all four of SD1.5)."""
    return tuple(range(len(unet.up_blocks)))
